"""Float rounding as a recorded, controllable part of a run: the numerics mode that pins the CPU
kernels (`modes`), and the fingerprint of what decides rounding on every run (`fingerprint`)."""
