from hypothesis import settings

# Kernel computations take variable time on shared CI machines: no per-example deadline.
settings.register_profile("ntkscope", deadline=None, print_blob=True)
settings.load_profile("ntkscope")
