"""xsteer: transfer steering vectors from a parent LM into smaller child LMs."""

__version__ = "0.1.0"
