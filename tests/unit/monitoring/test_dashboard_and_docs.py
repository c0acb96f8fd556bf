"""The dashboard and the alert rules only name metrics the bot really exports.

Why: a renamed metric silently turns a panel or an alert into "no data" forever. This ties the
docs to the registry so such a rename fails a test instead.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import yaml
from prometheus_client import CollectorRegistry

from bot.ops.metrics import REGISTRY
from bot.ops.pool_metrics import PoolCollector
from cache.metrics import CacheMetrics

DOCS = Path(__file__).resolve().parents[3] / "docs"
OURS = re.compile(r"\b((?:bot|cache|db_pool|redis_pool)_[a-z_]+)\b")


def _exported_names() -> set[str]:
    private = CollectorRegistry()
    CacheMetrics(registry=private)
    private.register(PoolCollector(SimpleNamespace(), SimpleNamespace()))
    names: set[str] = set()
    for registry in (REGISTRY, private):
        for family in registry.collect():
            suffixes = {
                "counter": ("_total",),
                "histogram": ("_bucket", "_sum", "_count"),
            }.get(family.type, ("",))
            names.update(family.name + suffix for suffix in suffixes)
    return names


def _exprs_of_dashboard() -> list[str]:
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    assert dashboard["schemaVersion"] >= 36
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exprs = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        exprs.extend(t["expr"] for t in panel["targets"])
    return exprs


def _exprs_of_alert_rules() -> list[str]:
    text = (DOCS / "monitoring.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]
    rules = next(b for b in blocks if isinstance(b, dict) and "groups" in b)
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def test_dashboard_and_alerts_name_only_exported_metrics() -> None:
    known = _exported_names()
    exprs = _exprs_of_dashboard() + _exprs_of_alert_rules()
    assert len(exprs) > 30
    used = {name for expr in exprs for name in OURS.findall(expr)}
    assert used - known == set()
    for expected in ("cache_events_total", "cache_load_seconds_bucket", "db_pool_checked_out"):
        assert expected in used
    for expr in exprs:
        assert expr.count("(") == expr.count(")"), expr
        assert expr.count("{") == expr.count("}"), expr


def test_readme_documents_every_setting() -> None:
    """Every field of Settings is an environment variable a person may need: the README's
    configuration table names each one (``X_FILE`` may be written as ``X(_FILE)``)."""
    from bot.config import Settings

    readme = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    missing = []
    for name in Settings.model_fields:
        env = name.upper()
        forms = (f"`{env}`", f"`{env} ", f", {env}`", f"{env.removesuffix('_FILE')}(_FILE)")
        if not any(form in readme for form in forms):
            missing.append(env)
    assert not missing, f"README's configuration table lacks {missing}"
