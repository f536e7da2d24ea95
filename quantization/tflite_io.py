"""Choose the I/O types of an int8 .tflite by editing the flatbuffer.

litert-torch folds the first QUANTIZE and the last DEQUANTIZE of a PT2E graph into the model's
input and output, so its int8 models take and return int8 tensors. Most apps feed float tensors
from their existing preprocessing, so bbdeploy's default is float I/O: a QUANTIZE is put back at
the input and a DEQUANTIZE at the output (both run by XNNPACK, a few microseconds). `uint8` I/O
(camera frames, older NNAPI drivers) requantizes with the zero point moved by 128; `int8` keeps the
converter's output as it is.
"""

from __future__ import annotations

import copy
from pathlib import Path


def set_io_type(path: Path, io_type: str) -> None:
    """Rewrite the .tflite at `path` in place so that its int8 inputs and outputs are `io_type`.

    A boundary that is float already (its first or last layer kept in float) stays as it is.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    if io_type == "int8":
        return
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(Path(path).read_bytes(), 0))
    graph = model.subgraphs[0]
    graph.inputs, graph.outputs = [int(i) for i in graph.inputs], [int(i) for i in graph.outputs]
    new_type = schema.TensorType.FLOAT32 if io_type == "float" else schema.TensorType.UINT8
    boundary_op = {True: schema.BuiltinOperator.QUANTIZE,
                   False: schema.BuiltinOperator.DEQUANTIZE if io_type == "float" else schema.BuiltinOperator.QUANTIZE}

    for is_input, positions in ((True, graph.inputs), (False, graph.outputs)):
        for slot, int8_index in enumerate(positions):
            if graph.tensors[int8_index].type != schema.TensorType.INT8:
                continue
            outer = _outer_tensor(graph.tensors[int8_index], new_type, schema)
            graph.tensors.append(outer)
            outer_index = len(graph.tensors) - 1
            operator = schema.OperatorT()
            operator.opcodeIndex = _opcode_index(model, boundary_op[is_input], schema)
            operator.inputs, operator.outputs = ([outer_index], [int8_index]) if is_input else ([int8_index], [outer_index])
            if is_input:
                graph.operators.insert(0, operator)
            else:
                graph.operators.append(operator)
            positions[slot] = outer_index
            _repoint_signatures(model, int8_index, outer_index)

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    Path(path).write_bytes(bytes(builder.Output()))


def _outer_tensor(int8_tensor, new_type: int, schema):
    """The tensor the app sees: same name and shape; uint8 keeps the scale with zero point + 128."""
    outer = copy.deepcopy(int8_tensor)
    int8_tensor.name = (int8_tensor.name or b"") + b"_int8"
    outer.type, outer.buffer = new_type, 0  # buffer 0 is the flatbuffer's empty buffer
    if new_type == schema.TensorType.FLOAT32:
        outer.quantization = None
    else:
        outer.quantization.zeroPoint = [int(z) + 128 for z in outer.quantization.zeroPoint]
    return outer


def _opcode_index(model, builtin: int, schema) -> int:
    for index, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return index
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _repoint_signatures(model, old_index: int, new_index: int) -> None:
    for signature in model.signatureDefs or []:
        for entry in (signature.inputs or []) + (signature.outputs or []):
            if entry.tensorIndex == old_index:
                entry.tensorIndex = new_index
