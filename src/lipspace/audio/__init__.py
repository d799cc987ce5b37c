"""Audio features for conditioners, each backend with a declared dim and rate, aligned to 25 fps video frames."""
