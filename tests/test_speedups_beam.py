"""mnist_tfx.speedups.beam: Beam's get_signature memoized and its TFRecord CRC, with Beam's answers."""

import functools
import importlib
import inspect

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import userstate
from apache_beam.typehints import decorators

from mnist_tfx.speedups import beam as beam_speedups


class _Counting:
  """Beam's get_signature, counting what it is asked."""

  def __init__(self):
    self.calls = []

  def __call__(self, func):
    self.calls.append(func)
    return decorators.get_signature(func)


class _Fn(beam.DoFn):

  def process(self, element, scale: int = 2, *args, **kwargs):
    yield element * scale


class _Stateful(beam.DoFn):
  COUNT = userstate.ReadModifyWriteStateSpec("count", beam.coders.VarIntCoder())

  def process(self, element, count=beam.DoFn.StateParam(COUNT)):
    yield element


def _users(monkeypatch, replacement=None):
  """Each module that calls get_signature, restored after the test."""
  modules = [importlib.import_module(n) for n in beam_speedups._USERS]
  original = decorators.get_signature
  for m in modules:
    monkeypatch.setattr(m, "get_signature", replacement or original)
  monkeypatch.setattr(beam_speedups, "_installed", None)
  return modules


def test_answers_as_beam_does_and_asks_once_per_function():
  counting = _Counting()
  memo = beam_speedups.memoized(counting)

  def plain(a, b=1, *, c: str = "x"):
    del a, b, c

  cases = [plain, _Fn.process, _Fn().process, _Fn().process, len, str.upper,
           functools.partial(plain, 1)]
  for _ in range(3):
    assert [memo(c) for c in cases] == [decorators.get_signature(c) for c in cases]
  # Two instances' bound methods share one answer; the function unbound has
  # its own (with `self`); builtins and partials are always asked.
  assert list(memo(_Fn().process).parameters)[0] == "element"
  assert list(memo(_Fn.process).parameters)[0] == "self"
  asked_python = [c for c in counting.calls if c in (plain, _Fn.process)
                  or getattr(c, "__func__", None) is _Fn.process]
  assert len(asked_python) == 3  # plain, _Fn.process, one bound method
  assert sum(1 for c in counting.calls if c is len) == 3


def test_a_changed_function_is_asked_again():
  memo = beam_speedups.memoized(decorators.get_signature)

  def f(a, b=1):
    del a, b

  assert memo(f).parameters["b"].default == 1
  f.__defaults__ = (5,)
  assert memo(f).parameters["b"].default == 5
  f.__annotations__["a"] = int
  assert memo(f).parameters["a"].annotation is int
  f.__signature__ = inspect.Signature()
  assert list(memo(f).parameters) == []


def test_defaults_that_cannot_be_compared_are_asked_again_not_an_error():
  memo = beam_speedups.memoized(decorators.get_signature)

  def f(a=np.zeros(3)):
    del a

  first = memo(f)
  f.__defaults__ = (np.ones(3),)  # == on arrays has no single truth value
  second = memo(f)
  assert second is not first
  assert second.parameters["a"].default[0] == 1.0


def test_what_beam_refuses_is_refused_and_not_remembered():
  counting = _Counting()
  memo = beam_speedups.memoized(counting)
  for _ in range(2):
    with pytest.raises(TypeError):
      memo(42)
  assert counting.calls == [42, 42]


def test_a_function_that_is_gone_leaves_the_memo():
  memo = beam_speedups.memoized(decorators.get_signature)

  def f(a):
    del a

  memo(f)
  assert len(memo.memo) == 1
  del f
  assert len(memo.memo) == 0


def test_install_puts_the_memo_where_beam_calls_it_once(monkeypatch):
  modules = _users(monkeypatch)
  original = modules[0].get_signature
  assert beam_speedups.memoize_signatures() is True
  memo = modules[0].get_signature
  assert memo is not original and hasattr(memo, "memo")
  assert all(m.get_signature is memo for m in modules)
  assert beam_speedups.memoize_signatures() is True  # idempotent
  assert all(m.get_signature is memo for m in modules)
  # Beam's DoFn checks still see state parameters.
  assert userstate.is_stateful_dofn(_Stateful()) is True
  assert userstate.is_stateful_dofn(_Fn()) is False
  with beam.Pipeline() as p:
    out = p | beam.Create([1, 2, 3]) | beam.ParDo(_Fn())
    assert_that(out, equal_to([2, 4, 6]))


def test_install_leaves_beam_alone_where_a_module_calls_something_else(monkeypatch):
  modules = _users(monkeypatch)
  other = lambda func: inspect.signature(func)  # pylint: disable=unnecessary-lambda
  monkeypatch.setattr(modules[1], "get_signature", other)
  before = [m.get_signature for m in modules]
  assert beam_speedups.memoize_signatures() is False
  assert [m.get_signature for m in modules] == before


def test_install_leaves_beam_alone_where_the_memo_would_answer_differently(monkeypatch):
  answers = iter(range(10**6))

  def changing(func):  # a different answer on every call
    del func
    return inspect.Signature([inspect.Parameter(
        f"p{next(answers)}", inspect.Parameter.POSITIONAL_ONLY)])

  modules = _users(monkeypatch, changing)
  assert beam_speedups.memoize_signatures() is False
  assert all(m.get_signature is changing for m in modules)


@pytest.fixture
def crc_choice(monkeypatch):
  """Beam's CRC choice, restored after the test."""
  from apache_beam.io import tfrecordio
  monkeypatch.setattr(tfrecordio._default_crc32c_fn, "fn", None)
  return tfrecordio


def test_tfrecords_beam_reads_are_checked_with_the_same_crc(crc_choice, tmp_path):
  import google_crc32c
  assert beam_speedups.fast_tfrecord_crc() is True
  assert crc_choice._default_crc32c_fn.fn is google_crc32c.value
  # What TensorFlow wrote, Beam reads back (each record's CRC checked) ...
  path = str(tmp_path / "data.tfrecord")
  records = [bytes([i % 256]) * (i * 37 % 2000) for i in range(50)]
  import tensorflow as tf
  with tf.io.TFRecordWriter(path) as writer:
    for r in records:
      writer.write(r)
  with beam.Pipeline() as p:
    out = p | beam.io.ReadFromTFRecord(path)
    assert_that(out, equal_to(records))
  # ... and a flipped byte is refused.
  data = bytearray(open(path, "rb").read())
  data[40] ^= 0xFF  # in the second record's data (the first is empty)
  open(path, "wb").write(bytes(data))
  with pytest.raises(Exception, match="Mismatch of data mask"):
    with beam.Pipeline() as p:
      _ = p | beam.io.ReadFromTFRecord(path)


def test_the_crc_is_left_to_beam_without_the_c_implementation(crc_choice, monkeypatch):
  import google_crc32c
  monkeypatch.setattr(google_crc32c, "implementation", "python")
  assert beam_speedups.fast_tfrecord_crc() is False
  assert crc_choice._default_crc32c_fn.fn is None


def test_the_crc_is_left_to_beam_where_it_would_differ(crc_choice, monkeypatch):
  import google_crc32c
  monkeypatch.setattr(google_crc32c, "value", lambda data: 0)
  assert beam_speedups.fast_tfrecord_crc() is False
  assert crc_choice._default_crc32c_fn.fn is None
