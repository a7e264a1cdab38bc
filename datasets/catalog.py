"""What datasets exist: the named entries `cce-bench datasets` lists, and where each comes from.

Sources, sizes and checksums of the MovieLens archives are GroupLens' own: the archives under
https://files.grouplens.org/datasets/movielens/ and the `<name>.zip.md5` file published next to
each; sizes are the archives' byte counts as that server reports them. Row counts are the
ratings each release's README states. Criteo Kaggle's archive size and md5 (and train.txt's md5)
are the ones Criteo's release and its mirrors publish; Criteo does not publish checksums for the
Terabyte day files, so those are verified by size where the server gives one, and by format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cce_bench.errors import ConfigError, UnknownName

from . import cache, custom, synthetic

DEFAULT_DATASET = "syn-1500-1000000"

GROUPLENS = "https://files.grouplens.org/datasets/movielens"
CRITEO_KAGGLE_URL = "https://go.criteo.net"
CRITEO_TERABYTE_URL = "https://storage.googleapis.com/criteo-cail-datasets"
CRITEO_TERMS = (
    "Criteo's click logs are released under Criteo's terms of use, a non-commercial research "
    "licence (read it at https://ailab.criteo.com/ressources/). Downloading them means you "
    "accept those terms; if you already have the files, pass --from FILE or --from FOLDER.")

# DLRM's per-feature counts of distinct values of Criteo Kaggle's C1..C26 (no frequency
# threshold, no modulo): the shape criteo-synthetic copies.
CRITEO_KAGGLE_CARDINALITIES = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27,
    14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572)


@dataclass(frozen=True)
class SourceFile:
    """One file to download: its name under the base URL (and in the downloads folder)."""

    name: str
    size: int | None  # bytes, None where the publisher gives none
    md5: str | None


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    kind: str  # "synthetic", "movielens", "criteo", "criteo-synthetic", "custom"
    source: str
    download_bytes: int | None
    rows: int | None  # rows of the source (ratings, log lines, interactions) where known
    description: str
    base_url: str | None = None
    files: tuple[SourceFile, ...] = ()
    # The ratings / log file the preprocessing reads, as a path inside the archive, and its
    # sha256 where known (checked when a user gives the extracted file with --from).
    member: str | None = None
    member_sha256: str | None = None
    member_md5: str | None = None
    terms: str | None = None  # shown before a download the user must agree to
    defaults: dict = field(default_factory=dict)  # preprocessing options and their defaults
    # Users and items of a GMF dataset where known before it is built (what a speed estimate
    # needs to shape random data like it: sweeps/bench_reproduce.py).
    users: int | None = None
    items: int | None = None


def _movielens(name: str, size: int, md5: str, rows: int, member: str, users: int, items: int,
               what: str, member_sha256: str | None = None) -> DatasetInfo:
    return DatasetInfo(name, "movielens", f"GroupLens {name}.zip", size, rows,
                       f"{users:,} users, {items:,} movies; {what}", base_url=GROUPLENS,
                       files=(SourceFile(f"{name}.zip", size, md5),), member=member,
                       member_sha256=member_sha256, users=users, items=items)


_TERABYTE_DAYS = tuple(SourceFile(f"day_{day}.gz", None, None) for day in range(24))

# Every fixed entry. Tests swap entries here for their fake files' sizes and checksums.
FIXED: dict[str, DatasetInfo] = {info.name: info for info in [
    _movielens("ml-100k", 4_924_029, "0e33842e24a9c977be4e0107933c0723", 100_000,
               "ml-100k/u.data", 943, 1682, "ratings 1-5 (tab-separated u.data)",
               member_sha256="06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"),
    _movielens("ml-1m", 5_917_549, "c4d9eecfca2ab87c1945afe126590906", 1_000_209,
               "ml-1m/ratings.dat", 6040, 3706, "ratings 1-5 (the paper's main)"),
    _movielens("ml-10m", 65_566_137, "ce571fd55effeba0271552578f2648bd", 10_000_054,
               "ml-10M100K/ratings.dat", 69878, 10677, "half-star ratings"),
    _movielens("ml-20m", 198_702_078, "cd245b17a1ae2cc31bb14903e1204af3", 20_000_263,
               "ml-20m/ratings.csv", 138493, 26744, "half-star ratings"),
    _movielens("ml-25m", 261_978_986, "6b51fb2759a8657d3bfcbfc42b592ada", 25_000_095,
               "ml-25m/ratings.csv", 162541, 59047, "half-star ratings"),
    DatasetInfo(
        "criteo-kaggle", "criteo", "Criteo Kaggle display ads (terms apply)", 4_576_820_670,
        45_840_617, "7 days of ad clicks: 13 dense + 26 categorical features (DLRM)",
        base_url=CRITEO_KAGGLE_URL,
        files=(SourceFile("criteo-research-kaggle-display-advertising-challenge-dataset.tar.gz",
                          4_576_820_670, "df9b1b3766d9ff91d5ca3eb3d23bed27"),),
        member="train.txt", member_md5="4dcfe6c4b7783585d4ae3c714994f26a",
        terms=CRITEO_TERMS, defaults={"threshold": 1, "max_ind_range": None}),
    DatasetInfo(
        "criteo-terabyte", "criteo", "Criteo 1TB click logs (terms apply)", None,
        4_373_472_329, "24 days of ad clicks, day_0..day_23 (DLRM; ids modulo 10M)",
        base_url=CRITEO_TERABYTE_URL, files=_TERABYTE_DAYS, terms=CRITEO_TERMS,
        # DLRM's Terabyte runs hash ids into 10M rows per feature (--max-ind-range).
        defaults={"threshold": 1, "max_ind_range": 10_000_000}),
]}

# Listed even before they are built; any other syn-<V>-<N> name works as well.
SYNTHETIC_LISTED = [DEFAULT_DATASET, "syn-6000-1000000", "syn-10000-10000000"]

CRITEO_SYNTHETIC_PATTERN = re.compile(r"^criteo-synthetic(?:-(\d+))?(?:-cap(\d+))?$")
CRITEO_SYNTHETIC_ROWS = 1_000_000


def _synthetic_info(name: str) -> DatasetInfo:
    spec = synthetic.SyntheticSpec.parse(name)
    return DatasetInfo(name, "synthetic", "generated (seeded, no download)", None,
                       spec.interactions,
                       f"GMF truth model: {spec.vocab} users x {spec.vocab} items, latent dim 8",
                       users=spec.vocab, items=spec.vocab)


def _criteo_synthetic_info(name: str) -> DatasetInfo:
    match = CRITEO_SYNTHETIC_PATTERN.match(name)
    rows = int(match[1]) if match[1] else CRITEO_SYNTHETIC_ROWS
    cap = int(match[2]) if match[2] else None
    shape = f"ids capped at {cap:,}" if cap else "Criteo Kaggle cardinalities"
    return DatasetInfo(name, "criteo-synthetic", "generated (seeded, no download)", None, rows,
                       f"Criteo-shaped: 13 dense + 26 categorical, {shape}, hidden label model",
                       defaults={"rows": rows, "cap": cap})


def _custom_info(name: str, meta: dict) -> DatasetInfo:
    if "n_users" not in meta:
        return DatasetInfo(name, "custom", "your own data", None, None,
                           "your own: its meta.json is damaged; add it again with --from --force")
    source = meta["source_file"]
    return DatasetInfo(name, "custom", f"your {source.rsplit('/', 1)[-1]}", None,
                       meta["rows_read"],
                       f"your own: {meta['n_users']:,} users x {meta['n_items']:,} items, split "
                       f"{meta['split']}; from {source}")


def own_datasets() -> list[DatasetInfo]:
    """The datasets of the user's own data in the cache (`cce-bench download NAME --from`)."""
    root = cache.cache_root()
    found = []
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            meta = None if builtin(folder.name) else custom.find(folder.name)
            if meta is not None:
                found.append(_custom_info(folder.name, meta))
    return found


def catalog() -> list[DatasetInfo]:
    return ([_synthetic_info(name) for name in SYNTHETIC_LISTED] + list(FIXED.values())
            + [_criteo_synthetic_info("criteo-synthetic")] + own_datasets())


def builtin(name: str) -> bool:
    """Whether name is one of cce-bench's datasets (listed or generated by pattern)."""
    return (name in FIXED or bool(synthetic.NAME_PATTERN.match(name))
            or bool(CRITEO_SYNTHETIC_PATTERN.match(name)))


# Kept for built-in datasets (now and later); "downloads" is the cache's own folder.
RESERVED_PREFIXES = ("ml-", "syn-", "criteo")
RESERVED_NAMES = ("downloads",)


def check_own_name(name: str) -> None:
    """A name the user may give their own data, or ConfigError saying why not."""
    if builtin(name):
        raise ConfigError(f"{name} is a built-in dataset; give your own data a name of its own, "
                          f"e.g. `cce-bench download my-clicks --from FILE`")
    if not custom.NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"dataset name '{name}' has characters a name may not; use up to 64 "
                          "lowercase letters, digits, - and _, starting with a letter or digit "
                          "(e.g. my-clicks)")
    if name.startswith(RESERVED_PREFIXES) or name in RESERVED_NAMES:
        raise ConfigError(f"dataset name '{name}' is kept for cce-bench's own datasets (names "
                          "starting with ml-, syn- or criteo, and 'downloads'); choose another, "
                          f"e.g. my-{name}")


def info(name: str) -> DatasetInfo:
    if name in FIXED:
        return FIXED[name]
    if synthetic.NAME_PATTERN.match(name):
        return _synthetic_info(name)
    if CRITEO_SYNTHETIC_PATTERN.match(name):
        return _criteo_synthetic_info(name)
    own = custom.find(name)
    if own is not None:
        return _custom_info(name, own)
    raise UnknownName("dataset", name, [d.name for d in catalog()]
                      + ["syn-<vocab>-<interactions>", "criteo-synthetic-<rows>[-cap<ids>]",
                         f"or your own data: cce-bench download {name} --from FILE.csv"])
