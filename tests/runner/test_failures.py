from typer.testing import CliRunner

from ntkscope import store
from ntkscope.cli import app


def test_a_raising_run_is_stored_and_the_sweep_goes_on(toy, tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(
        f'study = "{toy}"\n[[zip]]\nvalue = [0, 1, 2, 3, 4]\n'
        "fail = [false, true, false, true, false]\n"
    )
    args = ["sweep", str(path), "--out", str(tmp_path / "out"), "--workers", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "5 configs, 0 already done, 3 done now, 2 failed" in result.stdout
    assert "RuntimeError: toy failure for value 1" in result.stderr
    runs = store.load(tmp_path / "out").set_index("config.value").sort_index()
    assert list(runs.status) == ["done", "failed", "done", "failed", "done"]
    assert runs.error[[1, 3]].str.contains("RuntimeError: toy failure").all()
    assert runs.error[[0, 2, 4]].isna().all()
