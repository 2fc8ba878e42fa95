"""`edgeserve quickstart`: the whole loop on one machine, built from the real components."""
