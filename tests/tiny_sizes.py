"""Test-only sizes shared by several test modules (imported as ``tiny_sizes``: tests/ is on sys.path through its
conftest; a name of its own, since every tests/<dir>/conftest.py is a module called ``conftest``)."""

# CPU-second sizes of the lipblink conditioner's prepared stages (landmark AE, audio encoder, GP-VAE) for tests
TINY_LIPBLINK_CONDITIONER = ["conditioner.audio.window=8", "conditioner.ae_steps=40", "conditioner.ae_batch=32",
                             "conditioner.sync_steps=20", "conditioner.sync_batch=16", "conditioner.blink_steps=20",
                             "conditioner.gp_steps=5", "conditioner.gp_batch=2", "conditioner.gp.model_dim=16",
                             "conditioner.gp.heads=2", "conditioner.gp.layers=1"]
