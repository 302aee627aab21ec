"""The deterministic order in which the reference executor runs a multi-core program.

specs/isa.md "Several cores": each core's stream is a legal order of its own queues; between
cores only the semaphores order commands. :func:`base_order` runs each core's stream in order
and switches core at a SEM_WAIT whose count the signals run so far do not reach: a legal
execution of all the cores' queues, and the same one every run (the executor's ``inorder``
schedule; :class:`~tcc_compiler.sim.hazards.Ordering` computes the happens-before relation in
it).
"""

from __future__ import annotations

from tcc_compiler.errors import ExecutionError
from tcc_compiler.isa import spec
from tcc_compiler.isa.commands import Command


def base_order(cmds: list[Command], ranges: list[tuple[int, int]]) -> list[int]:
    """Indices of ``cmds`` (per-core streams at ``ranges``, [start, end) each) in the
    deterministic interleaving: stream order for one core.

    Raises:
        ExecutionError: the cores' waits deadlock (names each stuck core's next command).
    """
    if len(ranges) == 1:
        return list(range(len(cmds)))
    heads = [a for a, _ in ranges]
    counts: dict[int, int] = {}
    order: list[int] = []
    while len(order) < len(cmds):
        moved = False
        for c, (_, b) in enumerate(ranges):
            while heads[c] < b:
                cmd = cmds[heads[c]]
                if cmd.opcode == spec.SEM_WAIT.opcode and counts.get(cmd.sem, 0) < cmd.count:
                    break
                if cmd.opcode == spec.SEM_SIGNAL.opcode:
                    counts[cmd.sem] = counts.get(cmd.sem, 0) + 1
                order.append(heads[c])
                heads[c] += 1
                moved = True
        if not moved:
            stuck = [f"core {c} command {heads[c]} ({cmds[heads[c]].name})"
                     for c, (_, b) in enumerate(ranges) if heads[c] < b]
            raise ExecutionError("schedule: the cores' waits deadlock ("
                                 + ", ".join(stuck) + " can never start)")
    return order


def run_stream(executor, images: list[bytes], input_stride: int, output_stride: int,
               output_bytes: int, **run_kw) -> list[bytes]:
    """Run a stream program (npu_cmd_stream.bin, specs/manifest.md "Stream program") on
    ``images`` (each one image's INPUT bytes, as many as the program takes per run) and
    return each image's OUTPUT bytes (``output_bytes`` each).

    ``executor`` is an :class:`~tcc_compiler.sim.executor.Executor` of the stream program;
    image ``i``'s input goes at ``i * input_stride`` of the INPUT region (zero padded) and its
    output is read at ``i * output_stride``. ``run_kw`` goes to ``executor.run`` (schedule,
    seed, check).

    Raises:
        InputError: an image longer than ``input_stride``, or the wrong number of images for
            the program's INPUT region.
        ExecutionError: as ``executor.run``.
    """
    from tcc_compiler.errors import InputError

    if any(len(x) > input_stride for x in images):
        raise InputError(f"stream program: an image of more than {input_stride} bytes")
    buf = b"".join(x + bytes(input_stride - len(x)) for x in images)
    out = executor.run(buf, **run_kw)
    return [out[i * output_stride:i * output_stride + output_bytes] for i in range(len(images))]
