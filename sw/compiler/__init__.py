"""The compiler: a Brevitas QONNX export through FINN's front end to deflow's hardware-layer
graph, folded per board, with cycle and resource estimates, FIFO depths and the golden model."""
