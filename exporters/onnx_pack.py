"""Pack sibling projections of a builder graph with LoRA into one MatMul and one LoRA slot.

Given an adapter, the ONNX Runtime GenAI builder emits q, k and v (and gate, up) as
separate MatMuls, each with its own LoRA branch (A MatMul, B MatMul, Add). Without an
adapter it emits one packed q|k|v MatMul. The unpacked form costs a slotted base speed
even with no adapter active: more, smaller MatMuls and three extra operators per
projection. This pass rewrites each group of siblings that share their input into

    x -> MatMul(W_q|W_k|W_v) [-> Add(bias)] -> Add(x @ A @ B) -> GroupQueryAttention

with one LoRA slot for the group (A [in, r], B [r, q+k+v]); where the consumers need
the parts separately, a Split restores them. An adapter on q, k and v separately maps
onto the packed slot with its ranks concatenated and B block-diagonal (see
exporters/onnx_adapter.py). fp32/fp16 MatMul and int4 MatMulNBits weights are
concatenated along the output axis, which is exact: each output column is computed as
before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

# Builder section -> (leaves packed together, packed leaf name).
GROUPS = {"attn": (("q_proj", "k_proj", "v_proj"), "qkv_proj"), "mlp": (("gate_proj", "up_proj"), "gate_up_proj")}
_LORA_ADD = re.compile(r"^/model/layers\.(?P<layer>\d+)/(?P<sec>\w+)/(?P<leaf>\w+)/lora/Add$")
_BASE_MATMUL = re.compile(r"^/model/layers\.(?P<layer>\d+)/(?P<sec>attn)/(?P<leaf>\w+)/MatMul(_Q4)?$")


@dataclass
class _Unit:
    leaf: str
    base: object  # NodeProto: MatMul or MatMulNBits
    lora_a: object | None  # None: a sibling without LoRA (packed as the plain export packs it)
    lora_b: object | None
    add: object | None
    bias: object | None  # the Add(bias) after the LoRA Add, if any
    out: int

    @property
    def tail(self) -> str:
        return (self.bias or self.add or self.base).output[0]

    @property
    def nodes(self) -> list:
        return [n for n in (self.base, self.lora_a, self.lora_b, self.add, self.bias) if n is not None]


class _Graph:
    def __init__(self, graph) -> None:
        from onnx import numpy_helper

        self.g = graph
        self.inits = {i.name: i for i in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.to_array = numpy_helper.to_array

    def array(self, name: str) -> np.ndarray | None:
        init = self.inits.get(name)
        return None if init is None else self.to_array(init)


def _unit(gr: _Graph, add, leaf: str) -> _Unit | None:
    if len(add.input) != 2:
        return None
    nodes = [gr.producer.get(i) for i in add.input]
    if any(n is None for n in nodes):
        return None
    is_b = [n.op_type == "MatMul" and n.input[1].endswith(".lora_B.MatMul.weight") for n in nodes]
    if is_b.count(True) != 1:
        return None
    lora_b, base = (nodes[0], nodes[1]) if is_b[0] else (nodes[1], nodes[0])
    lora_a = gr.producer.get(lora_b.input[0])
    if lora_a is None or base.op_type not in ("MatMul", "MatMulNBits") or lora_a.input[0] != base.input[0]:
        return None
    out = _out_features(gr, base)
    if out is None:
        return None
    bias = None
    users = gr.consumers.get(add.output[0], [])
    if len(users) == 1 and users[0].op_type == "Add":
        other = [i for i in users[0].input if i != add.output[0]]
        b = gr.array(other[0]) if len(other) == 1 else None
        if b is not None and b.shape == (out,):
            bias = users[0]
    return _Unit(leaf, base, lora_a, lora_b, add, bias, out)


def _out_features(gr: _Graph, base) -> int | None:
    if base.op_type == "MatMul":
        w = gr.array(base.input[1])
        return None if w is None or w.ndim != 2 else int(w.shape[1])
    if any(base.input[4:]):
        return None  # g_idx / bias inputs: leave alone
    return next(int(a.i) for a in base.attribute if a.name == "N")


def _bare_unit(gr: _Graph, base, leaf: str) -> _Unit | None:
    """A projection without a LoRA branch: its base MatMul and, if any, its bias Add."""
    out = _out_features(gr, base) if base.op_type in ("MatMul", "MatMulNBits") else None
    if out is None:
        return None
    users = gr.consumers.get(base.output[0], [])
    bias = None
    if len(users) == 1 and users[0].op_type == "Add":
        other = [i for i in users[0].input if i != base.output[0]]
        b = gr.array(other[0]) if len(other) == 1 else None
        if b is None or b.shape != (out,):
            return None
        bias = users[0]
    return _Unit(leaf, base, None, None, None, bias, out)


def _attr(node, name: str):
    from onnx import helper

    return next(helper.get_attribute_value(a) for a in node.attribute if a.name == name)


def _packed_weights(gr: _Graph, units: list[_Unit], prefix: str) -> tuple[list, list[str], dict]:
    """New initializers for the packed base MatMul; (initializers, node inputs, attributes)."""
    from onnx import numpy_helper

    first = units[0].base
    if first.op_type == "MatMul":
        w = np.concatenate([gr.array(u.base.input[1]) for u in units], axis=1)
        name = f"{prefix}.MatMul.weight"
        return [numpy_helper.from_array(w, name)], [name], {}
    inits, names = [], []
    for idx, suffix in ((1, "weight_Q4"), (2, "weight_scales"), (3, "weight_zp")):
        if len(first.input) <= idx or not first.input[idx]:
            break
        parts = [gr.array(u.base.input[idx]) for u in units]
        flat = parts[0].ndim == 1
        rows = [p.reshape(u.out, -1) if flat else p for p, u in zip(parts, units, strict=True)]
        arr = np.concatenate(rows, axis=0)
        name = f"{prefix}.MatMul.{suffix}"
        inits.append(numpy_helper.from_array(arr.reshape(-1) if flat else arr, name))
        names.append(name)
    attrs = {a.name: _attr(first, a.name) for a in first.attribute}
    attrs["N"] = sum(u.out for u in units)
    return inits, names, attrs


def _same_weights_kind(gr: _Graph, units: list[_Unit]) -> bool:
    b0 = units[0].base
    if any(u.base.op_type != b0.op_type or u.base.input[0] != b0.input[0] for u in units):
        return False
    if b0.op_type == "MatMulNBits":
        keys = ("K", "bits", "block_size")
        if any(_attr(u.base, k) != _attr(b0, k) for u in units for k in keys):
            return False
        if any(len(u.base.input) != len(b0.input) for u in units):
            return False
    if len({u.bias is None for u in units}) != 1:  # all siblings biased, or none
        return False
    if all(u.lora_a is None for u in units):
        return True
    if any(u.lora_a is None for u in units):
        return False
    dtypes = {gr.inits[u.lora_a.input[1]].data_type for u in units}
    return len(dtypes) == 1


def pack_projections(model) -> dict[str, list[list]]:
    """Rewrite `model` (an onnx.ModelProto with weights loaded) in place.

    Returns, for each packed slot, its parts: [[leaf, out_features], ...] in column order.
    q|k|v without any LoRA branch is packed too, without a slot (the builder unpacks it
    whenever it is given an adapter; its plain export has it packed). Groups that cannot
    be packed exactly (LoRA on some siblings only, mixed weight kinds, extra MatMulNBits
    inputs) stay as the builder wrote them.
    """
    from onnx import helper, numpy_helper

    gr = _Graph(model.graph)
    found: dict[tuple[str, str], dict[str, _Unit]] = {}
    for node in model.graph.node:
        m = _LORA_ADD.match(node.name) if node.op_type == "Add" else None
        if m is None or m["sec"] not in GROUPS or m["leaf"] not in GROUPS[m["sec"]][0]:
            continue
        unit = _unit(gr, node, m["leaf"])
        if unit is not None:
            found.setdefault((m["layer"], m["sec"]), {})[m["leaf"]] = unit
    # q, k and v without any LoRA: the builder unpacks them whenever it is given an
    # adapter (slots elsewhere only); pack them back as its plain export has them.
    bare: dict[tuple[str, str], dict[str, _Unit]] = {}
    lora_users = {i for n in model.graph.node if n.op_type == "Add" and n.name.endswith("/lora/Add") for i in n.input}
    for node in model.graph.node:
        m = _BASE_MATMUL.match(node.name)
        if m is None or m["leaf"] not in GROUPS[m["sec"]][0] or (m["layer"], m["sec"]) in found:
            continue
        if node.output[0] in lora_users:
            continue
        unit = _bare_unit(gr, node, m["leaf"])
        if unit is not None:
            bare.setdefault((m["layer"], m["sec"]), {})[m["leaf"]] = unit
    found.update(bare)  # disjoint: a group with any LoRA unit was skipped above

    drop: set[int] = set()
    new_nodes: list[tuple[int, list]] = []  # (index of the first replaced node, nodes)
    new_inits: list = []
    rename_inputs: dict[int, tuple] = {}
    parts_out: dict[str, list[list]] = {}
    position = {id(n): k for k, n in enumerate(model.graph.node)}
    for (layer, sec), by_leaf in found.items():
        leaves, packed_leaf = GROUPS[sec]
        if set(by_leaf) != set(leaves):
            continue
        units = [by_leaf[leaf] for leaf in leaves]
        if not _same_weights_kind(gr, units):
            continue
        lora = units[0].lora_a is not None
        x = units[0].base.input[0]
        slot = f"model.layers.{layer}.{sec}.{packed_leaf}"
        path = f"/model/layers.{layer}/{sec}/{packed_leaf}"
        inits, w_inputs, attrs = _packed_weights(gr, units, slot)
        a_name, b_name = f"{slot}.lora_A.MatMul.weight", f"{slot}.lora_B.MatMul.weight"
        if lora:
            lora_dtype = gr.inits[units[0].lora_a.input[1]].data_type
            np_dtype = helper.tensor_dtype_to_np_dtype(lora_dtype)
            n_in = int(gr.array(units[0].lora_a.input[1]).shape[0])
            total = sum(u.out for u in units)
            inits += [numpy_helper.from_array(np.zeros((n_in, 1), np_dtype), a_name),
                      numpy_helper.from_array(np.zeros((1, total), np_dtype), b_name)]
        op = units[0].base.op_type
        base_name = f"{path}/MatMul_Q4" if op == "MatMulNBits" else f"{path}/MatMul"
        domain = units[0].base.domain
        nodes = [helper.make_node(op, [x, *w_inputs], [f"{path}/MatMul/output_0"], name=base_name, domain=domain,
                                  **attrs)]
        base_out = f"{path}/MatMul/output_0"
        if units[0].bias is not None:
            # Bias right after the base MatMul (as in the plain export), where ONNX Runtime
            # fuses it into MatMulNBits; the LoRA update is added after it.
            bias = np.concatenate([gr.array(next(i for i in u.bias.input if i != (u.add or u.base).output[0]))
                                   for u in units])
            inits.append(numpy_helper.from_array(bias, f"{slot}.Add.bias"))
            nodes.append(helper.make_node("Add", [base_out, f"{slot}.Add.bias"], [f"{path}/Add/output_0"],
                                          name=f"{path}/Add"))
            base_out = f"{path}/Add/output_0"
        packed = base_out
        if lora:
            nodes += [
                helper.make_node("MatMul", [x, a_name], [f"{path}/lora_A/MatMul/output_0"],
                                 name=f"{path}/lora_A/MatMul"),
                helper.make_node("MatMul", [f"{path}/lora_A/MatMul/output_0", b_name],
                                 [f"{path}/lora_B/MatMul/output_0"], name=f"{path}/lora_B/MatMul"),
                helper.make_node("Add", [base_out, f"{path}/lora_B/MatMul/output_0"],
                                 [f"{path}/lora/Add/output_0"], name=f"{path}/lora/Add"),
            ]
            packed = f"{path}/lora/Add/output_0"
        tails = [u.tail for u in units]
        users = {id(c): c for t in tails for c in gr.consumers.get(t, [])}
        gqa = next(iter(users.values())) if len(users) == 1 else None
        graph_outputs = {o.name for o in model.graph.output}
        if (gqa is not None and gqa.op_type == "GroupQueryAttention" and list(gqa.input[:3]) == tails
                and not graph_outputs & set(tails)):
            rename_inputs[id(gqa)] = (gqa, [packed, "", ""])
        else:
            sizes = f"{slot}.split_sizes"
            inits.append(numpy_helper.from_array(np.array([u.out for u in units], np.int64), sizes))
            nodes.append(helper.make_node("Split", [packed, sizes], tails, name=f"{path}/Split", axis=-1))
        for u in units:
            drop.update(id(n) for n in u.nodes)
        first = min(position[id(n)] for u in units for n in u.nodes)
        new_nodes.append((first, nodes))
        new_inits += inits
        if lora:
            parts_out[slot] = [[u.leaf, u.out] for u in units]

    if not new_nodes:
        return parts_out
    for gqa, inputs in rename_inputs.values():
        del gqa.input[:3]
        for k, name in enumerate(inputs):
            gqa.input.insert(k, name)
    inserts = dict(new_nodes)
    ordered = []
    for k, n in enumerate(model.graph.node):
        ordered += inserts.get(k, [])
        if id(n) not in drop:
            ordered.append(n)
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    used = {i for n in ordered for i in n.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    keep += [i for i in new_inits if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return parts_out
