from pathlib import Path

from cnnmode.config import all_keys

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_documents_every_config_key():
    missing = [key for key in all_keys() if f"| `{key}` |" not in README]
    assert not missing, f"README config-key table lacks: {missing}"
