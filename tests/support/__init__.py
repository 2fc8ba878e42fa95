"""Test support shared across areas: small real models and a real Mosquitto broker."""
