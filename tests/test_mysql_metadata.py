"""ML Metadata in a database server (MariaDB, MySQL's Debian stand-in): two
output dirs share one store, and the second run's baseline is the first's
blessed model. The server is started here, in a temporary data dir on a
loopback port, and stopped at the end (`make test` installs mariadb-server)."""

import io
import os
import shutil
import socket
import subprocess
import time

import pytest

from pipeline import local_runner
from pipeline.configs import PipelineConfig, mysql_parts, with_overrides
from components.plain_data import ConfigError
from results import lineage, metadata

_SERVER = shutil.which("mariadbd") or shutil.which("mysqld") or (
    "/usr/sbin/mariadbd" if os.path.exists("/usr/sbin/mariadbd") else None)
_INSTALL = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
pytestmark = pytest.mark.skipif(
    not (_SERVER and _INSTALL),
    reason="needs Debian's mariadb-server (make test installs it)")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  """A MariaDB server of our own: its data dir, loopback, a user and a database."""
  root = tmp_path_factory.mktemp("mariadb")
  data, port = root / "data", _free_port()
  subprocess.run([_INSTALL, "--no-defaults", f"--datadir={data}", "--user=root",
                  "--auth-root-authentication-method=normal", "--skip-test-db"],
                 check=True, capture_output=True, timeout=300)
  proc = subprocess.Popen(
      [_SERVER, "--no-defaults", f"--datadir={data}", "--user=root",
       "--bind-address=127.0.0.1", f"--port={port}", f"--socket={root / 'sock'}",
       f"--pid-file={root / 'pid'}", "--skip-name-resolve"],
      stdout=open(root / "server.log", "wb"), stderr=subprocess.STDOUT)
  try:
    client = shutil.which("mariadb") or shutil.which("mysql")
    sql = ("CREATE DATABASE mlmd; CREATE USER 'mnist'@'127.0.0.1' IDENTIFIED BY "
           "'s3cret:/@'; GRANT ALL ON mlmd.* TO 'mnist'@'127.0.0.1';")
    deadline = time.monotonic() + 60
    while True:
      done = subprocess.run([client, "--no-defaults", "-uroot", "-h127.0.0.1",
                             f"-P{port}", "--protocol=tcp", "-e", sql],
                            capture_output=True, text=True, timeout=30)
      if done.returncode == 0:
        break
      if time.monotonic() > deadline or proc.poll() is not None:
        raise RuntimeError(f"MariaDB did not start: {done.stderr}\n"
                           f"{(root / 'server.log').read_text()[-2000:]}")
      time.sleep(0.5)
    # The password has URI-special characters, percent-encoded as users must.
    yield f"mysql://mnist:s3cret%3A%2F%40@127.0.0.1:{port}/mlmd"
  finally:
    proc.terminate()
    proc.wait(timeout=60)


def _config(out, uri, **hyperparameters):
  return with_overrides(
      PipelineConfig(output_dir=str(out), metadata_server=uri),
      **{f"hyperparameters.{k}": v for k, v in dict(epochs=1, **hyperparameters).items()})


def test_two_output_dirs_share_one_store_and_its_baseline(server, tiny_data_dir, tmp_path):
  first = local_runner.run(_config(tmp_path / "a", server), tiny_data_dir,
                           out=io.StringIO())
  assert first["status"] == "succeeded", first.get("error")
  assert first["blessed"] and first["baseline_accuracy"] is None
  assert not os.path.exists(tmp_path / "a" / "metadata.sqlite")
  second = local_runner.run(_config(tmp_path / "b", server, seed=1), tiny_data_dir,
                            out=io.StringIO())
  assert second["status"] == "succeeded", second.get("error")
  # The other output dir's blessed model is this run's baseline.
  assert second["baseline_accuracy"] == pytest.approx(first["accuracy"])
  store = metadata.open_store(server)
  chain = lineage.lineage(store, int(second["pushed_version"])) if (
      second["pushed_version"]) else None
  if chain is not None:
    assert chain["blessing"]["baseline"]["uri"] == first["artifacts"]["Trainer.model"]
  assert [r["run"] for r in lineage.runs(store)][:2] == [second["run_id"],
                                                          first["run_id"]]


def test_the_password_stays_out_of_messages(server):
  config = PipelineConfig(metadata_server=server)
  assert "s3cret" not in config.metadata_shown and ":***@" in config.metadata_shown
  assert mysql_parts(server)["password"] == "s3cret:/@"


@pytest.mark.parametrize("uri", [
    "mysql://127.0.0.1:3306/db",          # no user
    "mysql://u@127.0.0.1/db",             # no port
    "mysql://u@127.0.0.1:3306/",          # no database
    "postgres://u@127.0.0.1:5432/db",     # another server
    "mysql://u:pw@127.0.0.1:99999/db",    # port out of range
])
def test_bad_metadata_uris_are_config_errors(uri):
  with pytest.raises(ConfigError, match="metadata-uri") as raised:
    PipelineConfig(metadata_server=uri)
  assert "pw" not in str(raised.value)


def test_a_run_against_a_server_that_does_not_answer_says_so(tiny_data_dir, tmp_path):
  from results import summary
  config = _config(tmp_path / "out", f"mysql://u:pw@127.0.0.1:{_free_port()}/db")
  with pytest.raises(local_runner.PipelineFailed) as failed:
    local_runner.run(config, tiny_data_dir, out=io.StringIO())
  assert failed.value.summary["status"] == "failed"
  assert failed.value.summary["error"] == summary.CANNOT_CONNECT


def test_two_dirs_that_run_at_once_on_one_store_each_name_their_own_run(
    server, tiny_data_dir, tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  outs = [str(tmp_path / name) for name in ("x", "y")]
  procs = [subprocess.Popen(
      [sys.executable, "-m", "mnist_tfx", "run", "--data-dir", tiny_data_dir,
       "--output-dir", out, "--metadata-uri", server, "--epochs", "1",
       "--seed", str(21 + seed), "--no-report"], cwd=root, stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=root))
      for seed, out in enumerate(outs)]
  for proc in procs:
    assert proc.wait(900) == 0, proc.stderr.read()[-3000:]
  summaries = []
  for out in outs:
    with open(os.path.join(out, "summary.json"), encoding="utf-8") as f:
      summaries.append(json.load(f))
  assert summaries[0]["run_id"] != summaries[1]["run_id"]
  store = metadata.open_store(server)
  for out, summary in zip(outs, summaries):
    assert summary["status"] == "succeeded"
    # Seeds no run used before: each Trainer trained here, in its own dir
    # (the data steps may be reused from another dir's run: one store).
    assert summary["component_status"]["Trainer"] == "complete"
    assert summary["artifacts"]["Trainer.model"].startswith(out + "/")
    nodes = metadata.read_run(store, summary["run_id"])
    assert all(a.uri.startswith(out + "/") for n in nodes.values()
               for arts in n.outputs.values() for a in arts if n.state == "complete")


def test_the_password_is_in_no_file_or_message_of_a_run(server, tiny_data_dir, tmp_path):
  """The password from a file, never in the URI: then grep every file the run
  wrote, its messages, the lock a second run reads and the database."""
  import sys  # pylint: disable=g-import-not-at-top
  from urllib.parse import quote  # pylint: disable=g-import-not-at-top
  from tests.test_faults import Run  # pylint: disable=g-import-not-at-top
  password = mysql_parts(server)["password"]
  bare = server.replace(server.split("//", 1)[1].split("@", 1)[0], "mnist")
  assert mysql_parts(bare)["user"] == "mnist" and ":" not in bare.split("@")[0][8:]
  secret_file = tmp_path / "password"
  secret_file.write_text(password + "\n")
  out = str(tmp_path / "out")
  run = Run(tiny_data_dir, out, "--metadata-uri", bare,
            "--metadata-password-file", str(secret_file))
  run.wait_for("Trainer ...")
  # A second run meanwhile names the holder: its command, masked.
  busy = subprocess.run([sys.executable, "-m", "mnist_tfx", "run", "--data-dir",
                         tiny_data_dir, "--output-dir", out, "--metadata-uri", server],
                        capture_output=True, text=True, timeout=300,
                        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        env=dict(os.environ, PYTHONPATH=os.path.dirname(
                            os.path.dirname(os.path.abspath(__file__)))))
  assert busy.returncode == 3 and "in use by another mnist-tfx run" in busy.stderr
  assert run.finish() == 0, run.err
  said = "\n".join(run.stdout + run.stderr) + busy.stdout + busy.stderr
  hidden = {password, quote(password, safe="")}
  assert not [h for h in hidden if h in said]
  for top, _, names in os.walk(out):
    for name in names:
      path = os.path.join(top, name)
      with open(path, "rb") as f:
        data = f.read()
      assert not [h for h in hidden if h.encode() in data], path
  for name in (".mnist-tfx.lock", "summary.json"):
    assert os.stat(os.path.join(out, name)).st_mode & 0o077 == 0 or name == "summary.json"
  logs = os.listdir(os.path.join(out, "logs"))
  assert logs and all(os.stat(os.path.join(out, "logs", n)).st_mode & 0o077 == 0
                      for n in logs)
  assert os.stat(os.path.join(out, ".mnist-tfx.lock")).st_mode & 0o077 == 0
  dump_tool = shutil.which("mariadb-dump") or shutil.which("mysqldump")
  if dump_tool:
    parts = mysql_parts(server)
    dump = subprocess.run([dump_tool, "--no-defaults", "-uroot", "-h127.0.0.1",
                           f"-P{parts['port']}", "--protocol=tcp", parts["database"]],
                          capture_output=True, timeout=120)
    assert dump.returncode == 0, dump.stderr[-500:]
    assert not [h for h in hidden if h.encode() in dump.stdout]


@pytest.mark.parametrize("content,error", [
    ("", "expected the password alone on one line"),
    ("a\nb\n", "expected the password alone on one line"),
    ("[client]\nuser=x\n", "needs password=... in its [client] section"),
])
def test_a_bad_password_file_is_a_usage_error(tmp_path, content, error):
  import sys  # pylint: disable=g-import-not-at-top
  path = tmp_path / "password"
  path.write_text(content)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, "-m", "mnist_tfx", "runs", "--metadata-uri",
                         "mysql://u@127.0.0.1:1/db", "--metadata-password-file",
                         str(path)], capture_output=True, text=True, timeout=120,
                        cwd=root, env=dict(os.environ, PYTHONPATH=root))
  assert proc.returncode == 2 and error in proc.stderr, proc.stderr


def test_the_password_file_may_be_a_mysql_option_file(tmp_path):
  from pipeline.configs import read_password_file  # pylint: disable=g-import-not-at-top
  path = tmp_path / "my.cnf"
  path.write_text("[client]\nuser = mnist\npassword = \"s3cret:/@\"\n")
  assert read_password_file(str(path)) == "s3cret:/@"
  missing = tmp_path / "none"
  with pytest.raises(ConfigError, match="cannot read it"):
    read_password_file(str(missing))
