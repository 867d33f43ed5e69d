"""The paths a run stores, made absolute when it starts."""
from __future__ import annotations

import os
from pathlib import Path

from ..config import Config
from ..models.defaults import DEFAULT_MODELS


def _absolute(path: str | None) -> str | None:
    """An existing path made absolute (symlinks kept); anything else as written, so that an error
    about it names what the user typed."""
    if path is None or not Path(path).expanduser().exists():
        return path
    return os.path.abspath(Path(path).expanduser())


def resolve_paths(cfg: Config) -> Config:
    """Make every path a run stores absolute, when the run starts. The stored config is what eval,
    generate, export and resume read later, from any directory; a relative model.path or data path
    would only work from the folder the run was started in. Embedded short names stay names."""
    m, d, r = cfg.model, cfg.data, cfg.retention
    if m.path not in DEFAULT_MODELS:
        m.path = _absolute(m.path)
    m.init_from = _absolute(m.init_from)
    if isinstance(d.train, str):
        d.train = _absolute(d.train)
    else:   # several files: paths, or {path, weight} entries
        d.train = [_absolute(t) if isinstance(t, str) else t.model_copy(update={"path": _absolute(t.path)})
                   for t in d.train]
    d.val, d.test = _absolute(d.val), _absolute(d.test)
    if r.reference != "auto":
        r.reference = _absolute(r.reference)
    r.replay_data = _absolute(r.replay_data)
    cfg.bias.probes, cfg.bias.swaps = _absolute(cfg.bias.probes), _absolute(cfg.bias.swaps)
    return cfg
