"""An experiment folder's files as the search leaves them: a trial's results."""
import json

from tune_cvae.experiment.files import set_aside_forgotten, trial_results


def test_a_resumed_trials_epochs_count_once_the_later_report_winning(tmp_path):
    """Ray appends again the epochs a resumed trial trains after its last saved checkpoint."""
    lines = [{"epoch": 1, "val_psnr": 10.0}, {"epoch": 2, "val_psnr": 11.0}, {"epoch": 2, "val_psnr": 11.5},
             {"epoch": 3, "val_psnr": 12.0}]
    (tmp_path / "result.json").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert [(r["epoch"], r["val_psnr"]) for r in trial_results(tmp_path)] == [(1, 10.0), (2, 11.5), (3, 12.0)]


def test_trials_ray_forgot_after_a_killed_driver_leave_the_table_but_stay_on_disk(tmp_path):
    for name in ("trial_a", "trial_b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "params.json").write_text("{}")
    (tmp_path / "report").mkdir()
    set_aside_forgotten(tmp_path, {"trial_a"})
    assert sorted(p.parent.name for p in tmp_path.glob("*/params.json")) == ["trial_a"]
    assert (tmp_path / "forgotten" / "trial_b" / "params.json").is_file() and (tmp_path / "report").is_dir()
