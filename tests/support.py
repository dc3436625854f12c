"""What several test modules share: the repository root, the tools, tiny model sizes, a
stand-in logger, scalar logs, commands run in the repository, the tiny configs, pointing a
config at a data root, comparing checkpoints bit for bit and recording inductor's graphs.
(Fixtures live in conftest.py.)"""
import contextlib
import importlib.util
import json
import os
import socket
import subprocess
from typing import List

import numpy as np
import torch

from mixedae.suite.repo import Repo
from mixedae.utils.checkpoint import load_checkpoint_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = Repo(ROOT)

#: the smallest ViT the tests use: 32x32 images, 8x8 patches (a 4x4 grid), 2 blocks.
TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4)


class Log:
    """A stand-in runner logger: records what is logged as (level, message) in ``lines``."""

    def __init__(self):
        self.lines = []

    def warning(self, message):
        self.lines.append(('warning', message))

    def error(self, message):
        self.lines.append(('error', message))


def write_scalars(path: str, records) -> None:
    """``records`` as JSON lines at ``path`` (the format of MMEngine's
    ``vis_data/scalars.json``), its folders made."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.writelines(json.dumps(r) + '\n' for r in records)


def run_in_repo(args: List[str], **kw) -> subprocess.CompletedProcess:
    """``args`` run in the repository root, its stdout and stderr captured as text."""
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, **kw)


def load_tool(name: str):
    """Import ``tools/<name>.py`` as a module (the tools are scripts, not a package)."""
    path = os.path.join(ROOT, 'tools', f'{name}.py')
    spec = importlib.util.spec_from_file_location(f'tools_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def data_root_options(root: str) -> List[str]:
    """``--cfg-options`` pointing the train, val and test datasets of a config at ``root``."""
    return [f'{loader}.dataset.data_root={root}'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]


def tensors(obj, prefix=''):
    """Every tensor / array of a checkpoint entry, by path."""
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    if isinstance(obj, np.ndarray):
        return {prefix: torch.from_numpy(obj)}
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return {}
    out = {}
    for k, v in items:
        out.update(tensors(v, f'{prefix}/{k}'))
    return out


def assert_identical(ckpt_a, ckpt_b, context):
    a, b = load_checkpoint_file(ckpt_a), load_checkpoint_file(ckpt_b)
    for entry in ('state_dict', 'optimizer', 'rng_state'):
        ta, tb = tensors(a[entry]), tensors(b[entry])
        assert ta.keys() == tb.keys() and ta, (context, entry)
        differ = [k for k in ta if not torch.equal(ta[k], tb[k])]
        assert not differ, f'{context}: {len(differ)} {entry} tensors differ, e.g. {differ[:3]}'


@contextlib.contextmanager
def inductor_recording_graphs():
    """torch.compile's inductor without its graph caches, yielding a list that receives the op
    names (``str(node.target)``) of each graph inductor compiles, after its post-grad passes.

    The FX graph and AOT autograd caches are keyed on the traced graph, not on the Python code
    of a custom op's fake implementation: a cache filled with a correct fake hides a wrong one
    (and the reverse). Those two are off here. The C++ kernel cache stays on: its key is the
    generated source, so it cannot hand back code for other source, and with it cold (as
    ``TORCHINDUCTOR_FORCE_DISABLE_CACHES=1`` makes it on every compile) the tiny MixedAE step
    of tests/unit/models/test_topk_compile.py took 171 s instead of 54 s (2 cores, load 8-11).
    ``fallback_random``: inductor draws random numbers with torch's generator, so a compiled
    step samples the eager step's mixing assignment.
    """
    import torch
    graphs = []

    def record(graph):
        graphs.append({str(n.target) for n in graph.nodes if n.op == 'call_function'})

    with torch._inductor.config.patch(fx_graph_cache=False, fx_graph_remote_cache=False,
                                      post_grad_custom_post_pass=record, fallback_random=True), \
            torch._functorch.config.patch(enable_autograd_cache=False,
                                          enable_remote_autograd_cache=False):
        try:
            yield graphs
        finally:
            torch._dynamo.reset()


def free_port() -> int:
    """A TCP port free on this machine now (the kernel's choice): rendezvous ports of runs that
    may go on beside each other (pytest-xdist workers, two test clusters)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]
