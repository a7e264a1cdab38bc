"""Getting a dataset into the cache: download (or take --from), verify, preprocess, generate.

`prepare(name)` is what `cce-bench download NAME` runs; `require(name)` is what loading runs:
it returns the ready cache entry, and builds one only for generated data or when asked to
download. Every entry is built through cache.build_entry, so an interrupted or failed build
leaves nothing that looks complete, and two processes never build one entry at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cce_bench.errors import ConfigError, DatasetError

from . import cache, criteo, criteo_synthetic, custom, movielens, synthetic
# The module, not the package attribute: datasets/__init__ binds `catalog` to the function.
from .catalog import DatasetInfo, builtin, check_own_name
from .catalog import info as dataset_info
from .download import Reporter, SilentReporter, download, file_digest, verify

GENERATED = ("synthetic", "criteo-synthetic")


@dataclass
class Source:
    """What preprocessing reads, and how it was checked."""

    inputs: list  # movielens: [path]; criteo: [LogFile, ...]
    checksum: str | None  # "md5:..." / "sha256:..." when verified by checksum
    expected_rows: int | None = None  # set when only the row count can verify it


def entry_options(info: DatasetInfo, overrides: dict | None = None) -> tuple[int, dict]:
    """(preprocessing version, options) of an entry: together they name its cache folder."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if info.kind == "synthetic":
        _refuse_options(info, overrides)
        return synthetic.VERSION, {"seed": synthetic.SyntheticSpec.parse(info.name).seed}
    if info.kind == "criteo-synthetic":
        _refuse_options(info, overrides)
        return criteo_synthetic.VERSION, dict(info.defaults) | {"seed": 0}
    if info.kind == "movielens":
        _refuse_options(info, overrides)
        return movielens.VERSION, {}
    if info.kind == "custom":  # one entry per name: custom.entry
        _refuse_options(info, overrides)
        return custom.VERSION, {}
    unknown = set(overrides) - set(info.defaults)
    if unknown:
        raise ConfigError(f"{info.name} has no option {', '.join(sorted(unknown))}; "
                          f"its options: {', '.join(info.defaults)}")
    return criteo.VERSION, criteo.CriteoOptions(**(info.defaults | overrides)).as_dict()


def _refuse_options(info: DatasetInfo, overrides: dict) -> None:
    if overrides:
        raise ConfigError(f"{info.name} takes no preprocessing options "
                          f"(got {', '.join(sorted(overrides))})")


def entry_path(name: str, **options) -> Path:
    info = dataset_info(name)
    version, opts = entry_options(info, options)
    return cache.entry_dir(name, version, opts)


def status(name: str, **options) -> str:
    """ready (preprocessed, default options) | damaged (it says why) | downloaded (source files
    here) | missing."""
    info = dataset_info(name)
    why = cache.problem(entry_path(name, **options))
    if why is None:
        return "ready"
    if why != "not built":
        return f"damaged: {why}"
    if info.files and all((cache.downloads_dir() / f.name).is_file() for f in info.files):
        return "downloaded"
    return "missing"


def require(name: str, download: bool = False, reporter: Reporter | None = None,
            device: str = "cpu", **options) -> Path:
    """The ready cache entry of name: generated data is built on first use, downloaded data
    only with download=True; otherwise a missing entry raises DatasetError that says the
    command to run."""
    info = dataset_info(name)
    path = entry_path(name, **options)
    why = cache.problem(path)
    if why is None:
        return path
    if info.kind in GENERATED or download:
        return prepare(name, reporter=reporter, device=device, **options)
    if why != "not built":
        raise DatasetError(f"dataset {name} is damaged in the data cache: {why}; run "
                           f"`cce-bench download {name}` to rebuild it")
    raise DatasetError(f"dataset {name} is not in the data cache ({cache.cache_root()}); run "
                       f"`cce-bench download {name}` first, or pass --download")


def prepare(name: str, *, mirror: str | None = None, source: str | Path | None = None,
            force: bool = False, reporter: Reporter | None = None, workers: int | None = None,
            device: str = "cpu", columns: custom.Columns | None = None, **options) -> Path:
    """Download (or take `source`), verify, and preprocess name into the cache; generate it
    for synthetic data. Returns the entry's folder. force: download and build again.

    A name that is not built in, with a source (or already in the cache that way), is the
    user's own data: custom.prepare reads the CSV / Parquet file with `columns`."""
    reporter = reporter or SilentReporter()
    if not builtin(name) and (source is not None or dataset_info(name).kind == "custom"):
        check_own_name(name)
        if mirror or options:
            given = ["--mirror"] * bool(mirror) + [f"--{k.replace('_', '-')}" for k in options]
            raise ConfigError(f"{', '.join(given)} do not apply to your own data ({name})")
        return custom.prepare(name, None if source is None else Path(source), columns, force,
                              reporter)
    if columns is not None:
        raise ConfigError(f"{name} is a built-in dataset; the column options (--user-column, "
                          "...) apply to your own data only (a name of yours with --from FILE)")
    info = dataset_info(name)
    if source is not None:
        _refuse_own_file(info, Path(source).expanduser())
    version, opts = entry_options(info, options)
    final = cache.entry_dir(name, version, opts)
    if info.kind in GENERATED:
        if mirror or source:
            raise ConfigError(f"{name} is generated, not downloaded; --mirror and --from do "
                              "not apply")
        return cache.build_entry(name, version, opts, _generator(info, device, workers),
                                 rebuild=force)
    if cache.is_ready(final) and not force and source is None:
        return final
    if source is not None:
        found = _from_user(info, Path(source).expanduser(), reporter)
    else:
        if info.terms:
            reporter.note(info.terms)
        found = _download_all(info, mirror, force, reporter)
    rebuild = force or found.checksum is None
    if cache.is_ready(final) and not rebuild:
        rebuild = cache.read_meta(final).get("source") != found.checksum
        if not rebuild:
            return final

    def build(folder: Path) -> dict:
        if info.kind == "movielens":
            meta = movielens.preprocess(found.inputs[0], info.member, folder, found.expected_rows)
        else:
            meta = criteo.preprocess(found.inputs, criteo.CriteoOptions(**opts), folder,
                                     workers=workers, reporter=reporter,
                                     expected_rows=found.expected_rows)
        return meta | {"source": found.checksum}

    return cache.build_entry(name, version, opts, build, rebuild=rebuild)


def _generator(info: DatasetInfo, device: str, workers: int | None):
    if info.kind == "synthetic":
        spec = synthetic.SyntheticSpec.parse(info.name)
        return lambda folder: synthetic.generate(spec, folder, device)
    spec = criteo_synthetic.CriteoSyntheticSpec(info.defaults["rows"], info.defaults["cap"])
    return lambda folder: criteo_synthetic.generate(spec, folder)


def _download_all(info: DatasetInfo, mirror: str | None, force: bool,
                  reporter: Reporter) -> Source:
    base = (mirror or info.base_url or "").rstrip("/")
    paths = []
    for file in info.files:
        dest = cache.downloads_dir() / file.name
        if force:
            for stale in (dest, dest.with_name(dest.name + ".part")):
                stale.unlink(missing_ok=True)
        paths.append(download(f"{base}/{file.name}", dest, file.size, file.md5, reporter))
    checksum = (f"md5:{info.files[0].md5}" if len(info.files) == 1 and info.files[0].md5
                else None)
    if info.kind == "movielens":
        return Source(paths, checksum)
    if len(paths) == 1:  # Kaggle's archive: train.txt inside it
        return Source([criteo.LogFile(paths[0], member=info.member)], checksum)
    return Source([criteo.LogFile(path) for path in paths], checksum)


def _from_user(info: DatasetInfo, path: Path, reporter: Reporter) -> Source:
    """A file or folder the user already has: the official archive (checked by md5), or the
    extracted files (by their own checksum where the catalog has one, else by row count and
    format, with a warning)."""
    if not path.exists():
        raise DatasetError(f"--from {path}: no such file or folder")
    archive = info.files[0] if len(info.files) == 1 else None
    if archive and path.is_file() and path.name.endswith((".zip", ".tar.gz", ".tgz")):
        digest = verify(path, archive.size, archive.md5, reporter)
        checksum = f"md5:{digest}" if digest else None
        if info.kind == "movielens":
            return Source([path], checksum)
        return Source([criteo.LogFile(path, member=info.member)], checksum)
    if info.kind == "criteo" and len(info.files) > 1:
        return _terabyte_days(info, path, reporter)
    member = _locate(info, path)
    if info.member_sha256 or info.member_md5:
        algorithm, expected = (("sha256", info.member_sha256) if info.member_sha256
                               else ("md5", info.member_md5))
        digest = file_digest(member, algorithm, reporter, f"verifying {member.name}")
        if digest != expected:
            raise DatasetError(f"{member} has {algorithm} {digest}, the official "
                               f"{member.name} has {expected}; is it the right, whole file?")
        source = Source([member], f"{algorithm}:{digest}")
    else:
        reporter.note(f"warning: no checksum is known for {member.name}; checking its row count "
                      f"({info.rows:,}) and format only")
        source = Source([member], None, expected_rows=info.rows)
    if info.kind == "criteo":
        source.inputs = [criteo.LogFile(member)]
    return source


def _refuse_own_file(info: DatasetInfo, path: Path) -> None:
    """A table of clicks given for a built-in name: the user meant a dataset of their own."""
    own = path.is_file() and path.name.lower().endswith(
        (".csv", ".tsv", ".csv.gz", ".tsv.gz", ".parquet", ".pq"))
    if own and path.name != (info.member or "").rsplit("/", 1)[-1]:
        raise ConfigError(f"{info.name} is a built-in dataset and {path.name} is not its "
                          f"release; to add your own data, give it a name of its own: "
                          f"`cce-bench download my-clicks --from {path}`")


def _locate(info: DatasetInfo, path: Path) -> Path:
    """The ratings / log file in an extracted folder (or the file itself)."""
    basename = info.member.rsplit("/", 1)[-1]
    if path.is_file():
        if path.name != basename:
            expected = " or ".join(f"{f.name}" for f in info.files)
            raise DatasetError(f"--from {path}: expected {expected}, {basename}, or the folder "
                               "the archive was extracted into")
        return path
    for candidate in (path / info.member, path / basename):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"--from {path}: the folder holds neither {info.member} nor {basename}")


def _terabyte_days(info: DatasetInfo, path: Path, reporter: Reporter) -> Source:
    if not path.is_dir():
        raise DatasetError(f"--from {path}: pass the folder that holds day_0 .. "
                           f"day_{len(info.files) - 1} (gzip or plain)")
    days, missing = [], []
    for file in info.files:
        plain = file.name.removesuffix(".gz")
        found = next((p for p in (path / file.name, path / plain) if p.is_file()), None)
        if found is None:
            missing.append(plain)
        else:
            days.append(criteo.LogFile(found))
    if missing:
        raise DatasetError(f"--from {path}: missing {', '.join(missing)} (plain or .gz)")
    reporter.note("warning: Criteo publishes no checksums for the Terabyte days; checking "
                  "their format only")
    return Source(days, None)
