"""The converter: quantize and compile a model into an edge bundle, validate and report."""
