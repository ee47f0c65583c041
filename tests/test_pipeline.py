"""The DAG's cache keys: the code each step runs, found by reading its imports."""

from pipeline import pipeline


def test_code_modules_follow_imports_transitively():
  trainer = pipeline.code_modules("components.trainer.run")
  assert {"components.trainer.run", "components.trainer.export", "components.models",
          "components.features", "components.plain_data"} <= set(trainer)
  assert "components.pusher" not in trainer  # not imported by the Trainer
  example_gen = pipeline.code_modules("components.example_gen")
  assert {"components.example_gen", "components.idx", "components.features"} <= set(
      example_gen)
  transform = pipeline.code_modules("components.transform.preprocessing")
  assert "components.features" in transform and "components.models" not in transform


def test_fingerprints_differ_by_code():
  a = pipeline.code_fingerprint("components.trainer.run")
  assert a == pipeline.code_fingerprint("components.trainer.run")  # stable
  assert a != pipeline.code_fingerprint("components.transform.preprocessing")
