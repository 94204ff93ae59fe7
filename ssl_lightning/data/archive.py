"""DataModules whose files come in one official archive (CIFAR, STL-10)."""

from pathlib import Path

from torchvision.datasets.utils import download_and_extract_archive

from ssl_lightning.data.base import SSLDataModule


class ArchiveDataModule(SSLDataModule):
    """Files looked for in ``data_dir/<folder>/`` (where the archive unpacks), then directly in
    ``data_dir``; ``download=True`` fetches ``url`` (checked against ``md5``) and unpacks it into
    ``data_dir``."""

    folder: str
    url: str
    md5: str

    def search_dirs(self) -> list[Path]:
        return [self.data_dir / self.folder, self.data_dir]

    def download_data(self) -> None:
        download_and_extract_archive(self.url, str(self.data_dir), md5=self.md5)

    def how_to_get_data(self) -> str:
        archive = self.url.rsplit("/", 1)[-1]
        return (
            f"Set download=True on a machine with internet access (fetches {self.url}), or "
            f"unpack {archive} into {self.data_dir} so that {self.data_dir / self.folder}/ "
            f"holds {', '.join(self.required_files)}."
        )
