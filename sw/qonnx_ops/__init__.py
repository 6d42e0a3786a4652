"""qonnx CustomOps of this project, domain ``sw.qonnx_ops``.

qonnx 1.0 resolves a node's ``domain`` as a Python module path and looks the class up by the
node's ``op_type`` (``__all__`` first). Nodes exported by ``models/`` in this domain therefore
execute under ``qonnx.core.onnx_exec.execute_onnx`` as long as ``sw`` is importable.
"""

from sw.qonnx_ops.channel_shuffle import ChannelShuffle
from sw.qonnx_ops.deformable_sample import DeformableSample
from sw.qonnx_ops.deformable_window import DeformableWindow

__all__ = ["ChannelShuffle", "DeformableSample", "DeformableWindow"]
