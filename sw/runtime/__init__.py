"""The runtime: drives a built accelerator (PYNQ overlay on the board, or the RTL simulation)
with frames in the AXI-Stream layout of the compiled design."""
