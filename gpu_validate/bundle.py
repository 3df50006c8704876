"""Carry a device run's records home: pack them into a few archives, unpack them into the tree.

A run on a GPU writes one record per suite file and kernel (about 150 files, plus the GEMM
records) in nested folders. To travel through size-limited channels (an issue attachment, an
artifact store, a copy out of a cluster) they are packed into a few flat files: at most 8 files
in ``$OUT``, each at most 16 MiB, no more than 2 folders down, named in letters, digits, ``.``,
``_`` and ``-``. :func:`pack` turns a records folder into ``records-<n>.tar`` parts within those
limits;
:func:`unpack` extracts them (refusing absolute paths, ``..`` and links) under
``gpu_validate/records``; :func:`check_out_tree` says whether a folder would come back whole.

Standard library only: it runs on the GPU machine, which has no pydantic.

    python -m gpu_validate.bundle pack RECORDS_DIR OUT_DIR
    python -m gpu_validate.bundle unpack ARCHIVE... [--into gpu_validate/records]
    python -m gpu_validate.bundle check OUT_DIR
"""

from __future__ import annotations

import argparse
import re
import sys
import tarfile
from pathlib import Path, PurePosixPath
from typing import Iterable, Optional, Union

# The limits a run's $OUT keeps to, so that it travels as a few plain files.
MAX_FILES_BACK = 8
MAX_FILE_BYTES = 16 * 2 ** 20
MAX_TOTAL_BYTES = 64 * 2 ** 20
MAX_FOLDERS_DOWN = 2
NAME_OK = re.compile(r"^[A-Za-z0-9._-]+$")

PART_BYTES = 15 * 2 ** 20        # one part stays under MAX_FILE_BYTES with the tar headers
RESERVED_FILES = 2               # summary.json and run.log travel beside the parts
RECORDS_INTO = Path(__file__).resolve().parent / "records"


class BundleError(RuntimeError):
    """The records do not fit the device tool's limits, or an archive is unsafe."""


def _record_files(records_dir: Path) -> list:
    return sorted(p for p in records_dir.rglob("*") if p.is_file())


def pack(records_dir: Union[str, Path], out_dir: Union[str, Path],
         part_bytes: int = PART_BYTES, max_parts: int = MAX_FILES_BACK - RESERVED_FILES) -> list:
    """Pack every file under ``records_dir`` into ``out_dir/records-<n>.tar`` parts of at most
    ``part_bytes`` each (files in sorted order, a new part when the next file would overflow);
    member names are relative to ``records_dir``. Returns the parts written."""
    records_dir, out_dir = Path(records_dir), Path(out_dir)
    files = _record_files(records_dir)
    if not files:
        raise BundleError(f"no files under {records_dir} to pack")
    out_dir.mkdir(parents=True, exist_ok=True)
    groups, current, size = [], [], 0
    for f in files:
        cost = _member_bytes(f.stat().st_size)
        if _archive_bytes(cost) > part_bytes:
            raise BundleError(f"{f} alone is larger than a part ({part_bytes} bytes)")
        if current and _archive_bytes(size + cost) > part_bytes:
            groups.append(current)
            current, size = [], 0
        current.append(f)
        size += cost
    groups.append(current)
    if len(groups) > max_parts:
        raise BundleError(f"{len(files)} files need {len(groups)} parts of {part_bytes} bytes; "
                          f"only {max_parts} files come back from the device")
    parts = []
    for n, group in enumerate(groups, 1):
        part = out_dir / f"records-{n}.tar"
        with tarfile.open(part, "w", format=tarfile.PAX_FORMAT) as tar:
            for f in group:
                info = tar.gettarinfo(str(f), arcname=f.relative_to(records_dir).as_posix())
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                with f.open("rb") as fh:
                    tar.addfile(info, fh)
        if part.stat().st_size > part_bytes:        # the bound above is meant to make this moot
            raise BundleError(f"{part}: {part.stat().st_size} bytes, over {part_bytes}")
        parts.append(part)
    return parts


def _member_bytes(size: int) -> int:
    """Upper bound of one member's bytes in a PAX tar: its data rounded up to 512-byte blocks,
    a 512-byte header and at most two blocks of extended (PAX) header."""
    return 3 * 512 + -(-size // 512) * 512


def _archive_bytes(members: int) -> int:
    """Members plus the two end-of-archive blocks, padded to tarfile's 10240-byte records."""
    return -(-(members + 1024) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


def _member_parts(m: tarfile.TarInfo, archive: Path) -> tuple:
    """The path parts of a safe member: a relative path naming a file below the target folder
    (not absolute, no '..', not '.' or empty, which would name the folder itself)."""
    name = PurePosixPath(m.name)
    if name.is_absolute() or ".." in name.parts or not name.parts or \
            any(part in ("", ".") for part in name.parts):
        raise BundleError(f"{archive}: unsafe member path {m.name!r}")
    return name.parts


def _plan(archives: Iterable[Union[str, Path]], into: Path, overwrite: bool) -> list:
    """Every (archive, member, target) to extract, after checking all archives and targets:
    plain files with safe paths, no target twice, no existing file replaced without
    ``overwrite``, no folder where a file goes nor a file where a folder goes."""
    plan, seen = [], {}
    for archive in archives:
        archive = Path(archive)
        try:
            with tarfile.open(archive, "r") as tar:
                members = tar.getmembers()
        except tarfile.TarError:
            raise BundleError(f"{archive}: not a tar archive (or a damaged one)") from None
        except OSError as exc:
            raise BundleError(f"{archive}: cannot read: {exc.strerror or exc}") from None
        for m in members:
            if m.isdir():
                continue
            if not m.isfile():
                raise BundleError(f"{archive}: {m.name} is not a plain file")
            parts = _member_parts(m, archive)
            if parts in seen:
                raise BundleError(f"{archive}: {'/'.join(parts)} is also in {seen[parts]}")
            seen[parts] = archive
            plan.append((archive, m, into.joinpath(*parts)))
    files = set(seen)
    for archive, m, target in plan:
        parts = target.relative_to(into).parts
        for i in range(1, len(parts)):
            if parts[:i] in files:
                raise BundleError(f"{archive}: {'/'.join(parts)} needs a folder "
                                  f"{'/'.join(parts[:i])}, which is also a file")
            folder = into.joinpath(*parts[:i])
            if folder.exists() and not folder.is_dir():
                raise BundleError(f"{folder} is a file; {archive} puts {'/'.join(parts)} "
                                  f"under it")
        if target.is_dir():
            raise BundleError(f"{target} is a folder; {archive} has a file of that name")
        if target.exists() and not overwrite:
            raise BundleError(f"{target} exists (pass overwrite=True / --overwrite)")
    if into.exists() and not into.is_dir():
        raise BundleError(f"{into} is a file, not a folder")
    return plan


DEFAULT_RECORDS = "gpu_validate_records"     # the records folder outside a checkout


def default_records_folder(cwd: Optional[Path] = None) -> Path:
    """Where ``tcsim validate unpack`` puts records without ``--into``: the gpu_validate/records
    folder of the repository when run inside a checkout of it (its root or any folder below),
    else ./gpu_validate_records. Never the installed package's folder: after a non-editable
    install that is inside site-packages, where nobody would look for them (or commit them)."""
    cwd = Path.cwd() if cwd is None else cwd
    for folder in (cwd, *cwd.parents):
        if (folder / "pyproject.toml").is_file() and \
                (folder / "gpu_validate" / "bundle.py").is_file():
            return folder / "gpu_validate" / "records"
    return cwd / DEFAULT_RECORDS


def unpack(archives: Iterable[Union[str, Path]], into: Union[str, Path] = RECORDS_INTO,
           overwrite: bool = False) -> list:
    """Extract the parts written by :func:`pack` under ``into``; returns the files written.
    Every archive and every target is checked before anything is written (unsafe or duplicate
    members, files in the way), so a refused unpack leaves the tree as it was. An existing file
    is kept unless ``overwrite``: a record once committed is never replaced silently."""
    into = Path(into)
    plan = _plan(list(archives), into, overwrite)
    written, created = [], []
    try:
        for archive in dict.fromkeys(a for a, _, _ in plan):
            with tarfile.open(archive, "r") as tar:
                for _, m, target in (step for step in plan if step[0] == archive):
                    data = tar.extractfile(m)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    new = not target.exists()
                    tmp = target.with_name(target.name + ".unpack-tmp")
                    tmp.write_bytes(data.read() if data else b"")
                    tmp.replace(target)
                    written.append(target)
                    if new:
                        created.append(target)
    except BaseException:
        for path in created:        # a failure while writing (disk full): undo the new files
            path.unlink(missing_ok=True)
        raise
    return written


def check_out_tree(out_dir: Union[str, Path]) -> list:
    """Why a folder would not come back whole from the device tool: a list of reasons (empty
    when everything under it comes back)."""
    out_dir = Path(out_dir)
    problems, total = [], 0
    files = [p for p in out_dir.rglob("*") if p.is_file() or p.is_symlink()]
    if len(files) > MAX_FILES_BACK:
        problems.append(f"{len(files)} files (at most {MAX_FILES_BACK} come back)")
    for p in files:
        rel = p.relative_to(out_dir)
        if p.is_symlink():
            problems.append(f"{rel}: a link")
            continue
        size = p.stat().st_size
        total += size
        if size > MAX_FILE_BYTES:
            problems.append(f"{rel}: {size} bytes (at most {MAX_FILE_BYTES})")
        if len(rel.parts) - 1 > MAX_FOLDERS_DOWN:
            problems.append(f"{rel}: more than {MAX_FOLDERS_DOWN} folders down")
        bad = [part for part in rel.parts if not NAME_OK.match(part)]
        if bad:
            problems.append(f"{rel}: name {bad[0]!r} has other characters than letters, "
                            f"digits, '.', '_' and '-'")
    if total > MAX_TOTAL_BYTES:
        problems.append(f"{total} bytes in all (at most {MAX_TOTAL_BYTES})")
    return problems


def list_members(archive: Union[str, Path]) -> list:
    """Member names of one part (for a quick look without extracting)."""
    with tarfile.open(Path(archive), "r") as tar:
        return [m.name for m in tar.getmembers() if m.isfile()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gpu_validate.bundle", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="records folder -> records-<n>.tar parts")
    p.add_argument("records_dir")
    p.add_argument("out_dir")
    p = sub.add_parser("unpack", help="parts -> files under --into")
    p.add_argument("archives", nargs="+")
    p.add_argument("--into", default=None,
                   help="folder for the records (default: the checkout's gpu_validate/records "
                        "when run inside one, else ./gpu_validate_records)")
    p.add_argument("--overwrite", action="store_true")
    p = sub.add_parser("check", help="would this folder come back whole from the device?")
    p.add_argument("out_dir")
    args = ap.parse_args(argv)
    try:
        if args.command == "pack":
            for part in pack(args.records_dir, args.out_dir):
                print(f"{part} ({part.stat().st_size} bytes, {len(list_members(part))} files)")
        elif args.command == "unpack":
            into = Path(args.into) if args.into else default_records_folder()
            files = unpack(args.archives, into, args.overwrite)
            print(f"{len(files)} files under {into.absolute()}")
        else:
            problems = check_out_tree(args.out_dir)
            for line in problems:
                print(line)
            return 1 if problems else 0
    except (BundleError, OSError, tarfile.TarError) as exc:
        print(f"gpu_validate.bundle: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
