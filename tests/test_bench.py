"""The benchmarks say when a figure misses its goal, and fail then."""

import pytest

from bench import pipeline_bench, serving_bench


def _pipeline_result(fresh, cached, rss_pipeline, rss_plain=1000):
  return {"model": "improved", "ratio_fresh": fresh, "ratio_fresh_median": fresh,
          "ratio_cached": cached, "ratio_cached_median": cached, "pairs": [{}] * 3,
          "plain_keras": {"seconds": 20.0, "accuracy": 0.97, "peak_rss_mb": rss_plain},
          "pipeline": {"seconds": 20.0 * fresh, "accuracy": 0.978,
                       "peak_rss_mb": rss_pipeline, "blessed": True,
                       "component_seconds": {"Trainer": 10.0}},
          "cached_rerun": {"seconds": 20.0 * cached, "all_cached": True,
                           "pushed_new": False, "peak_rss_mb": 900}}


def test_a_pipeline_bench_that_meets_every_goal_says_so():
  result = _pipeline_result(1.4, 0.25, 990)
  assert pipeline_bench.missed(result) == []
  text = pipeline_bench.report(result)
  assert "(goal <= 1.5x)" in text and "goals       : all met" in text


@pytest.mark.parametrize("fresh,cached,rss,what", [
    (1.6, 0.25, 990, "fresh pipeline"), (1.4, 0.31, 990, "cached rerun"),
    (1.4, 0.25, 1010, "pipeline peak RSS")])
def test_a_missed_pipeline_goal_is_named_and_fails_the_command(
    monkeypatch, capsys, tmp_path, fresh, cached, rss, what):
  result = _pipeline_result(fresh, cached, rss)
  (line,) = pipeline_bench.missed(result)
  assert line.startswith(what)
  assert f"MISSED      : {line}" in pipeline_bench.report(result)
  monkeypatch.setattr(pipeline_bench, "bench", lambda *a, **k: dict(result))
  code = pipeline_bench.main(["--data-dir", str(tmp_path), "--output-dir",
                              str(tmp_path / "out")])
  assert code == 1 and "MISSED" in capsys.readouterr().out


def _rest(p50, p99, concurrent):
  return {"p50_ratio": p50, "p99_ratio": p99, "concurrent16_ratio": concurrent}


def test_serving_goals():
  assert serving_bench.missed(_rest(1.9, 2.3, 1.6)) == []
  assert serving_bench.missed(_rest(2.1, 2.3, 1.6)) == ["REST p50 / in-process p50"]
  assert serving_bench.missed(_rest(1.9, 4.5, 1.4)) == [
      "REST p99 / in-process p50", "REST with 16 clients / in-process sequential rate"]
