"""LiteRT access in one place: ai-edge-litert, the maintained successor of tflite-runtime.

The flatbuffer schema and the interpreter come from ``ai_edge_litert``; where only the older
``tflite_runtime`` (interpreter) or TensorFlow (schema) is installed, those are used instead.
"""

from __future__ import annotations

from zo_edge.errors import ZoEdgeError


def schema():
    """The generated .tflite flatbuffer schema module (object API included)."""
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        try:
            from tensorflow.lite.python import schema_py_generated
        except ImportError:
            raise ZoEdgeError("reading .tflite files needs ai-edge-litert: pip install ai-edge-litert") from None
    return schema_py_generated


def interpreter_module():
    """``ai_edge_litert.interpreter``, or ``tflite_runtime.interpreter`` where only that is installed."""
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        try:
            from tflite_runtime import interpreter
        except ImportError:
            raise ZoEdgeError("the LiteRT interpreter needs ai-edge-litert: pip install ai-edge-litert") from None
    return interpreter
