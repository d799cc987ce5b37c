"""The model: the Lightning system that joins a conditioner and a renderer, how it is built from a config, how a
trained run is reloaded, and how it renders a sequence or is driven by audio."""
