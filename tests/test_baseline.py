"""The baseline resolver: latest blessed model, never this run's candidate."""

from tfx import v1 as tfx

from components import baseline


def _model(i):
  m = tfx.types.standard_artifacts.Model()
  m.id = i
  return m


def _blessing(model_id, blessed):
  b = tfx.types.standard_artifacts.ModelBlessing()
  b.set_int_custom_property("current_model_id", model_id)
  b.set_int_custom_property("blessed", int(blessed))
  return b


def test_no_blessed_model_means_no_baseline():
  out = baseline.latest_blessed_other([_model(3)], [_model(1), _model(3)],
                                      [_blessing(1, False)])
  assert out[baseline.MODEL_KEY] == [] and out[baseline.BLESSING_KEY] == []


def test_picks_latest_blessed():
  models = [_model(1), _model(2), _model(5)]
  out = baseline.latest_blessed_other(
      [_model(7)], models, [_blessing(1, True), _blessing(2, True),
                            _blessing(5, False)])
  assert [m.id for m in out[baseline.MODEL_KEY]] == [2]


def test_candidate_itself_is_never_its_baseline():
  # A rerun with nothing changed: the cached candidate is the blessed model.
  out = baseline.latest_blessed_other([_model(4)], [_model(4)],
                                      [_blessing(4, True)])
  assert out[baseline.MODEL_KEY] == []
  out = baseline.latest_blessed_other([_model(4)], [_model(2), _model(4)],
                                      [_blessing(2, True), _blessing(4, True)])
  assert [m.id for m in out[baseline.MODEL_KEY]] == [2]
