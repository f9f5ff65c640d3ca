"""Providers are found through the entry-point group kubemark_up.providers, the
built-in ones exactly as a third party's."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.cli import assert_one_line_error


@pytest.fixture
def third_party(tmp_path: Path) -> Path:
    """A third-party distribution on PYTHONPATH registering three providers: one
    good, one whose module is missing, one that is not a Provider."""
    (tmp_path / "thirdparty_km.py").write_text(textwrap.dedent("""
        from kubemark_up.config import ProviderSettings
        from kubemark_up.providers.local import LocalProvider

        class ElsewhereSettings(ProviderSettings):
            region: str = "north"
            size: int = 1

        class Elsewhere(LocalProvider):
            name = "elsewhere"
            settings_model = ElsewhereSettings
            legacy_env = {"region": ("ELSEWHERE_REGION",)}

        class NotAProvider:
            pass
    """))
    info = tmp_path / "thirdparty_km-2.5.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-km\nVersion: 2.5.0\n")
    (info / "entry_points.txt").write_text(
        "[kubemark_up.providers]\n"
        "elsewhere = thirdparty_km:Elsewhere\n"
        "broken = thirdparty_km_missing:Nope\n"
        "odd = thirdparty_km:NotAProvider\n"
    )
    return tmp_path


def test_builtin_local_provider_is_registered(bare_cli):
    result = bare_cli.run("providers")
    assert result.returncode == 0
    assert "local" in result.stdout and "kubemark-up" in result.stdout
    assert "kubemark_up.providers.local:LocalProvider" in result.stdout


def test_third_party_provider_is_listed_and_loaded_with_its_settings(bare_cli, third_party):
    env = {"PYTHONPATH": str(third_party)}
    listing = bare_cli.run("providers", **env)
    assert "elsewhere" in listing.stdout and "thirdparty-km" in listing.stdout and "2.5.0" in listing.stdout
    script = (
        "from kubemark_up.providers import load; from kubemark_up.providers.registry import resolve_settings; "
        "p = load(resolve_settings(flags={'provider': 'elsewhere'})); "
        "print(type(p).__name__, p.name, p.settings.region, p.settings.size)"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True,
        env=bare_cli.env(**env, ELSEWHERE_REGION="south", KUBEMARK_UP_ELSEWHERE_SIZE="3"),
    )
    assert loaded.stdout.strip() == "Elsewhere elsewhere south 3", loaded.stderr
    bad = bare_cli.run("start", "--provider", "elsewhere", **env, KUBEMARK_UP_ELSEWHERE_SIZE="big")
    assert_one_line_error(bad, 2, "elsewhere.size: Input should be a valid integer")


def test_broken_providers_are_named_in_one_line(bare_cli, third_party):
    env = {"PYTHONPATH": str(third_party)}
    result = bare_cli.run("start", "--provider", "broken", **env)
    assert_one_line_error(result, 1, "provider 'broken' (thirdparty_km_missing:Nope) failed to load")
    result = bare_cli.run("start", "--provider", "odd", **env)
    assert_one_line_error(result, 1, "is not a kubemark_up Provider subclass")
    result = bare_cli.run("start", "--provider", "nowhere", **env)
    assert_one_line_error(result, 2, "unknown provider 'nowhere'", "elsewhere", "local")
