"""LocalHub (tests/helpers/hub_server.py) driven by the real huggingface_hub client and by diffusers.

huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE at import, and conftest.py switches the Hub off in this
process, so each scenario is a client script run in a subprocess (its own asserts make it exit non-zero),
whose server side is then checked here. hf_xet stays installed and enabled in those processes, as for users.
"""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

from helpers.hub_server import LocalHub

TOKEN = "hf_test_token"  # user "tester" in LocalHub's default tokens
PRELUDE = """\
import json, sys
from pathlib import Path
ARGS = json.loads(sys.argv[1])
def read(path):
    return Path(path).read_bytes()
def raises(error, call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except error as err:
        return err
    raise AssertionError(f"{call.__name__}{args} did not raise {error.__name__}")
"""


def run_client(hub: LocalHub, home: Path, script: str, args: dict | None = None, **env: str) -> dict:
    """Run `script` (after PRELUDE) against `hub` with a fresh HF_HOME; returns the JSON of its last output line."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    clean.update(HF_ENDPOINT=hub.url, HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
    clean.update({"HF_HUB_OFFLINE": "0", **env})
    command = [sys.executable, "-c", PRELUDE + textwrap.dedent(script), json.dumps(args or {})]
    result = subprocess.run(command, env=clean, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-5000:]
    lines = result.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for path, content in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(content)
    return root


def assert_token_only_in_authorization(hub: LocalHub) -> None:
    assert hub.requests
    for request in hub.requests:
        where = f"{request.method} {request.path}"
        assert TOKEN.encode() not in request.body, where
        assert TOKEN not in request.path + json.dumps(request.query), where
        assert TOKEN not in json.dumps({k: v for k, v in request.headers.items() if k != "authorization"}), where
        assert request.headers.get("authorization") in (None, f"Bearer {TOKEN}"), where


def test_upload_branch_tag_and_download_round_trip(tmp_path):
    weights = os.urandom(3000) + b"\0"
    files = {
        "README.md": b"# A model\n",
        "weights.safetensors": weights,
        "images/sample.png": b"\x89PNG\r\n\x1a\n\0" + os.urandom(200),
        "unet/config.json": b'{"sample_size": 8}',
    }
    folder = write_folder(tmp_path / "folder", files)
    with LocalHub(tmp_path / "hub", page_size=2) as hub:
        out = run_client(
            hub,
            tmp_path / "home",
            """
            import hashlib
            from huggingface_hub import HfApi, hf_hub_download, hf_hub_url, snapshot_download
            api = HfApi()
            folder = Path(ARGS["folder"])
            local = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
            assert api.whoami()["name"] == "tester"
            repo_id = api.create_repo("model", private=True).repo_id
            assert repo_id == "tester/model"
            first = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="first")
            files = api.list_repo_files(repo_id)
            assert sorted(files) == sorted([".gitattributes", *local]), files

            info = api.model_info(repo_id, revision=first.oid, files_metadata=True)
            assert info.sha == first.oid and info.private is True
            assert {s.rfilename: s.size for s in info.siblings if s.rfilename in local} == {
                p: len(c) for p, c in local.items()
            }
            for path, content in local.items():
                assert read(hf_hub_download(repo_id, path)) == content, path
            snapshot = Path(snapshot_download(repo_id))
            assert {p: (snapshot / p).read_bytes() for p in local} == local

            second = api.upload_file(
                path_or_fileobj=b"v2", path_in_repo="weights.safetensors", repo_id=repo_id, commit_message="second"
            )
            assert read(hf_hub_download(repo_id, "weights.safetensors")) == b"v2"
            old = hf_hub_download(repo_id, "weights.safetensors", revision=first.oid)
            assert read(old) == local["weights.safetensors"]
            assert api.model_info(repo_id).sha == second.oid
            meta = api.get_hf_file_metadata(url=hf_hub_url(repo_id, "README.md"))
            readme = local["README.md"]
            assert meta.etag == hashlib.sha1(b"blob %d\\0" % len(readme) + readme).hexdigest()  # git's blob id
            assert meta.commit_hash == second.oid

            api.create_branch(repo_id, branch="exp", revision=first.oid)
            api.upload_file(path_or_fileobj=b"exp only", path_in_repo="notes/exp.txt", repo_id=repo_id, revision="exp")
            api.create_tag(repo_id, tag="v1", revision=first.oid)
            assert read(hf_hub_download(repo_id, "notes/exp.txt", revision="exp")) == b"exp only"
            assert read(hf_hub_download(repo_id, "weights.safetensors", revision="exp")) == local["weights.safetensors"]
            assert read(hf_hub_download(repo_id, "weights.safetensors", revision="v1")) == local["weights.safetensors"]
            assert "notes/exp.txt" not in api.list_repo_files(repo_id)
            refs = api.list_repo_refs(repo_id)
            assert {b.name for b in refs.branches} == {"main", "exp"} and [t.name for t in refs.tags] == ["v1"]
            assert [c.title for c in api.list_repo_commits(repo_id)] == ["second", "first", "initial commit"]
            assert [f.path for f in api.list_repo_tree(repo_id, path_in_repo="unet")] == ["unet/config.json"]
            api.delete_folder("images", repo_id, revision="exp")
            assert not [f for f in api.list_repo_files(repo_id, revision="exp") if f.startswith("images/")]
            api.delete_branch(repo_id, branch="exp")
            assert [b.name for b in api.list_repo_refs(repo_id).branches] == ["main"]

            data_id = api.create_repo("data", repo_type="dataset").repo_id
            api.upload_file(path_or_fileobj=b"a,b", path_in_repo="t.csv", repo_id=data_id, repo_type="dataset")
            assert read(hf_hub_download(data_id, "t.csv", repo_type="dataset")) == b"a,b"
            print(json.dumps({"first": first.oid, "second": second.oid}))
            """,
            {"folder": str(folder)},
            HF_TOKEN=TOKEN,
        )

        assert hub.repo_private("tester/model")
        stored = hub.repo_files("tester/model", out["first"])
        assert stored.pop(".gitattributes").startswith(b"*.safetensors filter=lfs")  # the Hub's first commit
        assert stored == files
        assert hub.repo_files("tester/model")["weights.safetensors"] == b"v2"
        assert hub.repo_files("tester/data", repo_type="dataset")["t.csv"] == b"a,b"
        assert [title for _, title in hub.repo_commits("tester/model")] == ["second", "first", "initial commit"]
        assert hub.repo_commits("tester/model")[0][0] == out["second"]
        # Everything went inline: no LFS batch and no Xet, though hf_xet is installed.
        assert hub.lfs_paths("tester/model") == set()
        assert not [r.path for r in hub.requests if "xet" in r.path or "/info/lfs/" in r.path]
        tree_pages = [r for r in hub.requests if "/tree/" in r.path]
        assert any("cursor" in r.query for r in tree_pages), "the client did not follow the tree pagination"
        assert_token_only_in_authorization(hub)


def test_lfs_basic_transfer_when_the_hub_asks_for_lfs(tmp_path):
    weights = os.urandom(5000)
    sha256 = hashlib.sha256(weights).hexdigest()
    with LocalHub(tmp_path / "hub", lfs_uploads=True) as hub:
        run_client(
            hub,
            tmp_path / "home",
            """
            import io, os
            from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download, hf_hub_url
            from huggingface_hub.file_download import http_get
            from huggingface_hub.utils import build_hf_headers, get_session
            api = HfApi()
            weights, sha256 = bytes.fromhex(ARGS["weights"]), ARGS["sha256"]
            repo_id = api.create_repo("lfs").repo_id
            # A file object: the client gives those to the LFS basic transfer even with hf_xet installed.
            operations = [CommitOperationAdd("model.safetensors", io.BytesIO(weights))]
            operations.append(CommitOperationAdd("a.txt", b"a"))
            api.create_commit(repo_id, operations, commit_message="lfs")

            url = hf_hub_url(repo_id, "model.safetensors")
            meta = api.get_hf_file_metadata(url=url)
            assert (meta.etag, meta.size, meta.xet_file_data) == (sha256, len(weights), None)
            head = get_session().head(url, headers=build_hf_headers()).headers
            assert (head["X-Linked-Etag"], head["X-Linked-Size"]) == (f'"{sha256}"', str(len(weights)))
            assert not [name for name in head if name.lower().startswith("x-xet")]
            path = hf_hub_download(repo_id, "model.safetensors")
            assert read(path) == weights and os.path.basename(os.path.realpath(path)) == sha256  # blob named by etag
            info = api.model_info(repo_id, files_metadata=True)
            lfs = {s.rfilename: s.lfs for s in info.siblings}
            assert lfs["model.safetensors"].sha256 == sha256 and lfs["a.txt"] is None
            tree = {f.path: f for f in api.list_repo_tree(repo_id, expand=True)}
            assert tree["model.safetensors"].lfs.size == len(weights) and tree["model.safetensors"].xet_hash is None
            assert tree["model.safetensors"].last_commit.title == "lfs"

            # How the client resumes an interrupted download: a Range request from what it has.
            partial = io.BytesIO(weights[:1000])
            partial.seek(1000)
            http_get(url, partial, resume_size=1000, headers=build_hf_headers())
            assert partial.getvalue() == weights
            """,
            {"weights": weights.hex(), "sha256": sha256},
            HF_TOKEN=TOKEN,
        )

        assert hub.lfs_paths("tester/lfs") == {"model.safetensors"}
        assert hub.repo_files("tester/lfs")["model.safetensors"] == weights
        requests = hub.requests
        batch, upload, verify, commit = (
            next(r for r in requests if r.path.endswith(suffix))
            for suffix in ("/info/lfs/objects/batch", sha256, "/info/lfs/objects/verify", "/commit/main")
        )
        assert json.loads(batch.body)["objects"] == [{"oid": sha256, "size": len(weights)}]
        assert (upload.method, upload.body, upload.status) == ("PUT", weights, 200)
        assert "authorization" not in upload.headers  # a signed URL, like S3's
        assert verify.status == 200
        assert {"path": "model.safetensors", "algo": "sha256", "oid": sha256, "size": len(weights)} in [
            json.loads(line)["value"] for line in commit.body.splitlines()
        ]
        assert weights.hex().encode() not in commit.body
        resumed = [r for r in requests if r.method == "GET" and r.headers.get("range") == "bytes=1000-"]
        assert [r.status for r in resumed] == [206]
        assert not [r.path for r in requests if "xet" in r.path]
        assert_token_only_in_authorization(hub)


def test_errors_are_the_hubs(tmp_path):
    seeded = {
        "model_index.json": b'{"_class_name": "DDPMPipeline"}',
        "scheduler/scheduler_config.json": b'{"_class_name": "DDPMScheduler"}',
        "unet/config.json": b'{"_class_name": "UNet2DModel"}',
        "unet/diffusion_pytorch_model.safetensors": os.urandom(1000),
    }
    with LocalHub(tmp_path / "hub") as hub:
        hub.seed_repo("google/ddpm-cifar10-32", write_folder(tmp_path / "cifar10", seeded))
        secret_commit = hub.seed_repo("tester/secret", {"secret.txt": b"hush"}, private=True)
        run_client(
            hub,
            tmp_path / "home",
            """
            from huggingface_hub import HfApi, hf_hub_download, snapshot_download
            from huggingface_hub.errors import (
                HfHubHTTPError, RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
            )
            api = HfApi()
            cifar = "google/ddpm-cifar10-32"
            snapshot = Path(snapshot_download(cifar))
            assert {p: (snapshot / p).read_bytes().hex() for p in ARGS["seeded"]} == ARGS["seeded"]

            raises(RepositoryNotFoundError, api.model_info, "tester/missing")
            raises(RepositoryNotFoundError, hf_hub_download, "tester/missing", "config.json")
            raises(RepositoryNotFoundError, hf_hub_download, "tester/secret", "secret.txt", token=False)
            raises(RepositoryNotFoundError, api.model_info, "tester/secret", token=False)
            assert read(hf_hub_download("tester/secret", "secret.txt")) == b"hush"

            raises(RevisionNotFoundError, hf_hub_download, cifar, "model_index.json", revision="nope")
            raises(RevisionNotFoundError, api.model_info, cifar, revision="nope")
            upload = dict(path_or_fileobj=b"x", path_in_repo="x")
            raises(RevisionNotFoundError, api.upload_file, **upload, repo_id="tester/secret", revision="nope")

            # The Hub's answer, not a cache miss (LocalEntryNotFoundError); diffusers' push_to_hub meets it when
            # a repo has no model card yet.
            raises(RemoteEntryNotFoundError, hf_hub_download, cifar, "README.md")
            raises(RemoteEntryNotFoundError, api.delete_file, "missing.txt", "tester/secret")

            assert raises(HfHubHTTPError, api.create_repo, "secret").response.status_code == 409
            assert api.create_repo("secret", exist_ok=True).repo_id == "tester/secret"
            denied = raises(HfHubHTTPError, api.upload_file, **upload, repo_id=cifar)
            assert denied.response.status_code == 403
            assert raises(HfHubHTTPError, api.whoami, token="hf_wrong").response.status_code == 401

            api.create_repo("doomed")
            api.delete_repo("tester/doomed")
            raises(RepositoryNotFoundError, api.model_info, "tester/doomed")
            raises(RepositoryNotFoundError, api.delete_repo, "tester/doomed")
            """,
            {"seeded": {path: content.hex() for path, content in seeded.items()}},
            HF_TOKEN=TOKEN,
        )

        assert hub.lfs_paths("google/ddpm-cifar10-32") == {"unet/diffusion_pytorch_model.safetensors"}
        assert hub.repo_commits("tester/secret")[0][0] == secret_commit  # nothing was committed by the errors
        assert hub.repo_private("tester/secret")
        anonymous = [r.status for r in hub.requests if "tester/secret" in r.path and "authorization" not in r.headers]
        assert anonymous and set(anonymous) == {401}  # a private repo without credentials, as the Hub answers


def test_server_errors_are_retried_then_raised(tmp_path):
    with LocalHub(tmp_path / "hub") as hub:
        hub.seed_repo("tester/flaky", {})
        hub.seed_repo("tester/down", {})
        hub.fail(503, times=2, path_regex="^/api/models/tester/flaky/preupload/")
        hub.fail(503, path_regex="^/api/models/tester/down")
        run_client(
            hub,
            tmp_path / "home",
            """
            from huggingface_hub import HfApi
            from huggingface_hub.errors import HfHubHTTPError
            from huggingface_hub.utils import _http
            waits = []
            _http.time.sleep = waits.append  # the client's backoff waits 1, 2, 4, 8, 8 s: record, don't wait
            api = HfApi()
            api.upload_file(path_or_fileobj=b"ok", path_in_repo="a.txt", repo_id="tester/flaky")
            assert waits == [1, 2], waits
            upload = dict(path_or_fileobj=b"x", path_in_repo="x")
            error = raises(HfHubHTTPError, api.upload_file, **upload, repo_id="tester/down")
            assert error.response.status_code == 503 and "injected" in str(error)
            assert waits == [1, 2, 1, 2, 4, 8, 8], waits
            assert raises(HfHubHTTPError, api.model_info, "tester/down").response.status_code == 503
            assert len(waits) == 7  # model_info does not retry
            """,
            HF_TOKEN=TOKEN,
        )

        def statuses(prefix: str) -> list[int | None]:
            return [r.status for r in hub.requests if r.path.startswith(prefix)]

        assert statuses("/api/models/tester/flaky/preupload/") == [503, 503, 200]
        assert hub.repo_files("tester/flaky")["a.txt"] == b"ok"
        assert statuses("/api/models/tester/down/preupload/") == [503] * 6  # 1 try + 5 retries
        assert statuses("/api/models/tester/down/commit/") == []
        hub.clear_faults()
        with urllib.request.urlopen(f"{hub.url}/api/models/tester/down") as response:
            assert json.load(response)["id"] == "tester/down"


def test_state_survives_a_restart(tmp_path):
    with LocalHub(tmp_path / "hub") as hub:
        commit = hub.seed_repo("tester/kept", {"a.bin": b"\0\1", "b.txt": b"b"}, private=True)
    with LocalHub(tmp_path / "hub") as hub:
        files = hub.repo_files("tester/kept", commit)
        assert (files["a.bin"], files["b.txt"]) == (b"\0\1", b"b")
        assert hub.repo_private("tester/kept") and hub.lfs_paths("tester/kept") == {"a.bin"}
