"""README's config table is generated from the config models (issue 14 item 8): it fails when the two
differ, so a new key, a changed default or a new description cannot drift from the code again.
Regenerate with: python scripts/config_table.py --write"""
import importlib.util
from pathlib import Path

from tailorlm.config import Config

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("config_table", ROOT / "scripts" / "config_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_config_table_is_the_generated_one():
    ct = _script()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert ct.START in readme and ct.END in readme, "README lacks the config-table markers"
    assert ct.readme_table(readme) == ct.table(), "README's table is stale: python scripts/config_table.py --write"


def test_every_key_is_in_the_table_with_its_default_and_a_description():
    ct = _script()
    rows = {k.strip("`"): (d, m) for k, d, m in ct.rows() if not k.startswith("`method.")}
    for section in ct.SECTIONS:
        for name, f in Config.model_fields[section].annotation.model_fields.items():
            assert f"{section}.{name}" in rows, f"{section}.{name} missing from the table"
    assert all(m.strip() for _, m in rows.values()), [k for k, (_, m) in rows.items() if not m.strip()]
    methods = [(k, m) for k, _, m in ct.rows() if k.startswith("`method.")]
    assert all(m.split(": ", 1)[1].strip() for _, m in methods), [k for k, m in methods if not m.split(": ", 1)[1]]
    assert rows["retention.temperature"][0] == "`1.0`" and rows["data.limit"][0] == "`null`"
    table = ct.table()
    assert "| `method.init` | `vocab` | prompt:" in table and "| `method.projection_dim` | `512` | prefix:" in table
    for key in ("model.task", "train.device", "data.chat_template", "data.audit", "train.max_bad_steps",
                "eval.batch_size", "retention.samples", "retention.sample_tokens", "retention.max_length",
                "train.epochs", "data.balance"):
        assert f"| `{key}` |" in table
