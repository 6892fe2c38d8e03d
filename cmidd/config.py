"""OmegaConf resolvers used by the config files; registered when ``cmidd`` is imported."""

import hashlib
from pathlib import Path

from omegaconf import Container, OmegaConf

from .errors import UserError

# The value of a table lookup without an entry: the reason, readable where the config is printed
# (``--cfg job --resolve`` never fails on a lookup); the run refuses it where the key is used,
# naming the key (``missing_entry``), except ``cmi.weight``, which falls back to ``auto``.
NO_ENTRY, HINT = "??? ", ": set "


def missing_entry(value, hint: bool = True):
    """Why a looked-up ``value`` has no entry in its table (and, with ``hint``, which key to
    set instead), or None if it has one."""
    if not (isinstance(value, str) and value.startswith(NO_ENTRY)):
        return None
    reason = value[len(NO_ENTRY) :]
    return reason if hint else reason.split(HINT)[0]


def check_entries(node, prefix: str) -> None:
    """Every key under ``node`` (config key ``prefix``) has a value: a one-line error naming the
    first one whose table has no entry."""

    def walk(value, key):
        if isinstance(value, dict):
            for name, item in value.items():
                walk(item, f"{key}.{name}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{key}[{index}]")
        elif missing_entry(value):
            raise UserError(f"{key} has no value: {missing_entry(value)}")

    walk(OmegaConf.to_container(node, resolve=True, throw_on_missing=False), prefix)


def paper_table(path: str, *keys, _root_, _node_):
    """``${paper_table:method.cmi_weights,${proxy.name},${dataset.benchmark},${ipc}}``: the entry
    of a hyper-parameter table in the config; a missing entry is ``NO_ENTRY`` and the reason,
    never a default."""
    node = OmegaConf.select(_root_, path)
    if node is None:
        return f"{NO_ENTRY}no table {path} in the config"
    for depth, key in enumerate(keys):
        candidates = [key, str(key)] + ([int(key)] if str(key).isdigit() else [])
        found = next((k for k in candidates if k in node), None)
        if found is None or node[found] is None:
            wanted = ", ".join(str(k) for k in keys)
            missing = (
                ""
                if depth == len(keys) - 1
                else f" (nothing under [{', '.join(str(k) for k in keys[: depth + 1])}])"
            )
            key = _node_._get_full_key(None)
            return (
                f"{NO_ENTRY}{path} has no entry for [{wanted}]{missing}{HINT}{key}=... on "
                "the command line, or add the entry to the table"
            )
        node = node[found]
    return node


def without(node, *keys):
    """``${without:${dataset.loader},root,archive}``: the entries of a mapping but the named ones,
    resolved (those named are not even resolved: a mandatory path may be unset). A config node,
    so that ``--cfg job --resolve`` can show it."""
    return OmegaConf.create(
        {
            key: OmegaConf.to_container(node[key], resolve=True)
            if isinstance(node[key], Container)
            else node[key]
            for key in node
            if key not in keys
        }
    )


def job_dir(override_dirname: str, limit: int = 200) -> str:
    """A sweep job's directory name from its overrides: one path component, never empty, and
    short enough for the file system (255 bytes): a long one keeps its start and a hash."""
    name = override_dirname.replace("/", "_") or "defaults"
    if len(name.encode()) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{name.encode()[: limit - 13].decode(errors='ignore')}~{digest}"


def register() -> None:
    resolvers = {
        "paper_table": paper_table,
        "job_dir": job_dir,
        "without": without,
        "ceil_div": lambda a, b: -(-int(a) // int(b)),
        # floor(n * num / den): epochs at a fraction of a schedule, as the references
        # compute them (e.g. IDC's 2 * epochs // 3)
        "floor_frac": lambda n, num, den: int(n) * int(num) // int(den),
        "project_root": lambda: str(Path(__file__).resolve().parents[1]),
        # ${if_null:${resume},<then>,<otherwise>}: a value that depends on whether a key is set
        "if_null": lambda value, then, otherwise: then if value is None else otherwise,
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
