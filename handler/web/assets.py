"""The web app's one front-end dependency, the LiveKit JS client, fetched from npm at a pinned
version, its integrity checked, into the project cache; never loaded from a CDN at run time:

    python -m handler.web.assets install      # prints the file's path

`npm pack` fetches the package tarball (npm's own client, registry and cache); the tarball's
sha512 must equal the `dist.integrity` pinned here (`npm view livekit-client@VERSION
dist.integrity`), and the one file the page loads, the UMD build (it defines the global
`LivekitClient`; no bundler needed), must have the pinned sha256, checked again each time the app
starts (a cache edited by hand is refused, not served). Its LICENSE is kept beside it.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handler.fakes.go_tools import cache_root

INSTALL_COMMAND = "python -m handler.web.assets install"


class AssetError(Exception):
    """The asset is missing or not what was pinned; the message says what to do."""


@dataclass(frozen=True)
class NpmFile:
    package: str
    version: str
    integrity: str
    """The tarball's Subresource-Integrity string, as the npm registry publishes it."""
    member: str
    """The file the page loads, inside the tarball."""
    sha256: str
    """That file's sha256, hex."""

    @property
    def cache_dir(self) -> Path:
        return cache_root() / "web" / self.package / self.version

    @property
    def path(self) -> Path:
        return self.cache_dir / Path(self.member).name

    def verified(self) -> Path:
        """The cached file, after checking its sha256; AssetError if missing or altered."""
        if not self.path.is_file():
            raise AssetError(
                f"{self.package} {self.version} is not installed in {self.cache_dir}: "
                f"run `{INSTALL_COMMAND}` (needs npm)"
            )
        got = hashlib.sha256(self.path.read_bytes()).hexdigest()
        if got != self.sha256:
            raise AssetError(
                f"{self.path}: sha256 {got} is not the pinned {self.sha256}: delete it and run "
                f"`{INSTALL_COMMAND}`"
            )
        return self.path

    def install(self, log: Any = sys.stderr) -> Path:
        """The verified file, fetched with `npm pack` when it is not cached yet."""
        try:
            return self.verified()
        except AssetError:
            pass
        npm = shutil.which("npm")
        if npm is None:
            raise AssetError(
                f"npm is not installed: it fetches {self.package}@{self.version} (apt install npm)"
            )
        print(f"fetching {self.package}@{self.version} from npm into {self.cache_dir}", file=log)
        with tempfile.TemporaryDirectory(prefix="handler-web-assets-") as tmp:
            done = subprocess.run(
                [npm, "pack", f"{self.package}@{self.version}", "--pack-destination", tmp, "--silent"],
                capture_output=True,
                text=True,
                cwd=tmp,
            )
            tarballs = list(Path(tmp).glob("*.tgz"))
            if done.returncode != 0 or len(tarballs) != 1:
                raise AssetError(
                    f"`npm pack {self.package}@{self.version}` failed:\n{done.stderr.strip()[-2000:]}"
                )
            data = tarballs[0].read_bytes()
            got = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
            if got != self.integrity:
                raise AssetError(
                    f"{self.package}@{self.version}: the tarball's integrity {got} is not the pinned "
                    f"{self.integrity}; refusing it"
                )
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with tarfile.open(tarballs[0]) as tar:
                for member, target in (
                    (self.member, self.path),
                    ("package/LICENSE", self.cache_dir / "LICENSE"),
                ):
                    source = tar.extractfile(member)
                    if source is None:
                        raise AssetError(f"{self.package}@{self.version}: no {member} in the tarball")
                    partial = target.with_suffix(".partial")
                    partial.write_bytes(source.read())
                    partial.replace(target)
        return self.verified()


LIVEKIT_CLIENT = NpmFile(
    package="livekit-client",
    version="2.23.0",
    integrity="sha512-j9Kg86nJjBjNFUD+ukp2jwMCGa0k+YD5gU//RzAM+ZY3pbG631QCte7fQjwqWMmtBzhDJL9nKYuOLMv/9IbAxg==",
    member="package/dist/livekit-client.umd.js",
    sha256="fb646f2260d84f91238d0a2dc10726c456631d6a26c7cafc43cfee5959b4d31d",
)
ALL = (LIVEKIT_CLIENT,)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["install"]:
        try:
            for asset in ALL:
                print(asset.install())
        except AssetError as e:
            print(f"web assets: {e}", file=sys.stderr)
            return 1
        return 0
    if args == ["path"]:
        for asset in ALL:
            print(asset.path if asset.path.is_file() else f"not installed; run `{INSTALL_COMMAND}`")
        return 0 if all(a.path.is_file() for a in ALL) else 1
    print(
        f"usage:\n  {INSTALL_COMMAND}   fetch (npm pack), check and cache; prints the paths\n"
        "  python -m handler.web.assets path      the cached files' paths",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
