"""OmegaConf resolvers used by the config files; registered when ``cmidd`` is imported."""
import hashlib
from pathlib import Path

from omegaconf import OmegaConf


def paper_table(path: str, *keys, _root_):
    """``${paper_table:method.cmi_weights,${proxy.name},${dataset.benchmark},${ipc}}``: the entry
    of a hyper-parameter table in the config; a missing entry is an error, never a default."""
    node = OmegaConf.select(_root_, path)
    if node is None:
        raise ValueError(f"no table {path} in the config")
    for depth, key in enumerate(keys):
        candidates = [key, str(key)] + ([int(key)] if str(key).isdigit() else [])
        found = next((k for k in candidates if k in node), None)
        if found is None or node[found] is None:
            where = ", ".join(f"{k}" for k in keys[:depth + 1])
            raise ValueError(f"{path} has no entry for [{where}]: add the entry to the table, or "
                             "set the value that is looked up there on the command line")
        node = node[found]
    return node


def job_dir(override_dirname: str, limit: int = 200) -> str:
    """A sweep job's directory name from its overrides: one path component, never empty, and
    short enough for the file system (255 bytes): a long one keeps its start and a hash."""
    name = override_dirname.replace("/", "_") or "defaults"
    if len(name.encode()) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{name.encode()[:limit - 13].decode(errors='ignore')}~{digest}"


def register() -> None:
    resolvers = {"paper_table": paper_table, "job_dir": job_dir,
                 "ceil_div": lambda a, b: -(-int(a) // int(b)),
                 # floor(n * num / den): epochs at a fraction of a schedule, as the references
                 # compute them (e.g. IDC's 2 * epochs // 3)
                 "floor_frac": lambda n, num, den: int(n) * int(num) // int(den),
                 "project_root": lambda: str(Path(__file__).resolve().parents[1])}
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
