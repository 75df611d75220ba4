"""The lineage of an artifact: everything upstream of it, down to its raw inputs."""

from __future__ import annotations

from typing import Any

from bertflow.pipeline.core.manifest import Manifest
from bertflow.pipeline.core.store import ArtifactStore, StoreError

MAX_INPUTS_SHOWN = 8


def lineage(store: ArtifactStore, artifact_id: str) -> dict[str, Any]:
    """A tree of dicts: the artifact, its upstream artifacts (by role) and its raw inputs.

    An upstream id that is no longer in the store appears with `"missing": true` rather than
    failing, so a damaged store still shows what it can; one that cannot be read (not a valid id,
    a broken manifest) is missing too, with `"problem"` saying why.
    """
    return _node(store, store.require(artifact_id), role=None, seen=set())


def _node(
    store: ArtifactStore, manifest: Manifest, role: str | None, seen: set[str]
) -> dict[str, Any]:
    seen = seen | {manifest.id}
    upstream = []
    for up_role, up_id in sorted(manifest.upstream.items()):
        try:
            up = store.get(up_id) if up_id not in seen else None
        except (StoreError, ValueError) as e:
            upstream.append({"role": up_role, "id": up_id, "missing": True, "problem": str(e)})
            continue
        if up is None:
            upstream.append({"role": up_role, "id": up_id, "missing": True})
        else:
            upstream.append(_node(store, up, up_role, seen))
    return {
        "role": role,
        "id": manifest.id,
        "kind": manifest.kind,
        "created": manifest.created,
        "uri": store.uri(manifest.id),
        "summary": summarize(manifest),
        "upstream": upstream,
        "inputs": [i.model_dump(mode="json") for i in manifest.inputs],
    }


def summarize(manifest: Manifest) -> str:
    """One line saying what an artifact holds: the stage's own, else its scalar stats."""
    if manifest.summary:
        return manifest.summary
    stats = manifest.stats.items()
    return ", ".join(f"{k}={v}" for k, v in stats if isinstance(v, int | float | str))


def render(tree: dict[str, Any]) -> str:
    """The lineage tree as indented text for a terminal."""
    lines: list[str] = []
    _render(tree, prefix="", is_last=True, is_root=True, lines=lines, shown=set())
    return "\n".join(lines)


def _render(
    node: dict[str, Any],
    prefix: str,
    is_last: bool,
    is_root: bool,
    lines: list[str],
    shown: set[str],
) -> None:
    """One node and its subtree; a node already drawn (a corpus under both the shards and
    their tokenizer) is named again but not expanded."""
    branch = "" if is_root else ("└── " if is_last else "├── ")
    role = f"{node['role']}: " if node.get("role") else ""
    if node.get("missing"):
        why = "missing from the store"
        if "problem" in node:
            why = f"cannot be read: {node['problem']}"
        lines.append(f"{prefix}{branch}{role}{node['id']}  ({why})")
        return
    if node["id"] in shown:
        lines.append(f"{prefix}{branch}{role}{node['id']}  (shown above)")
        return
    shown.add(node["id"])
    lines.append(f"{prefix}{branch}{role}{node['id']}  [{node['created']}]  {node['summary']}")
    child_prefix = prefix + ("" if is_root else ("    " if is_last else "│   "))
    inputs = node["inputs"]
    children: list[tuple[str, Any]] = [("node", up) for up in node["upstream"]]
    if inputs:
        children.append(("inputs", inputs))
    for i, (what, child) in enumerate(children):
        last = i == len(children) - 1
        if what == "node":
            _render(child, child_prefix, last, False, lines, shown)
        else:
            _render_inputs(child, child_prefix, last, lines)


def _render_inputs(
    inputs: list[dict[str, Any]], prefix: str, is_last: bool, lines: list[str]
) -> None:
    lines.append(f"{prefix}{'└── ' if is_last else '├── '}raw inputs ({len(inputs)} files)")
    inner = prefix + ("    " if is_last else "│   ")
    shown = inputs[:MAX_INPUTS_SHOWN]
    for i, item in enumerate(shown):
        last = i == len(shown) - 1 and len(inputs) <= MAX_INPUTS_SHOWN
        lines.append(
            f"{inner}{'└── ' if last else '├── '}{item['uri']}  {item['fingerprint'][:24]}"
        )
    if len(inputs) > MAX_INPUTS_SHOWN:
        lines.append(f"{inner}└── … and {len(inputs) - MAX_INPUTS_SHOWN} more")
