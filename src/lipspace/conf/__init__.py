"""lipspace's Hydra configs, shipped as package data (`pkg://lipspace.conf` on Hydra's search path)."""
