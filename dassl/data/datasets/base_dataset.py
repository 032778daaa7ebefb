"""``Datum`` (one labelled image) and ``DatasetBase`` (train/val/test lists plus helpers)."""
import os.path as osp
import random
from collections import defaultdict

__all__ = ["Datum", "DatasetBase"]


class Datum:
    """One image: path, label, domain and class name. The file must exist."""

    def __init__(self, impath="", label=0, domain=0, classname=""):
        assert isinstance(impath, str), f"impath must be a string, got {type(impath)}"
        if not osp.isfile(impath):
            raise FileNotFoundError(f'Image file listed in the split does not exist: "{impath}"')
        self._impath = impath
        self._label = label
        self._domain = domain
        self._classname = classname

    @property
    def impath(self):
        return self._impath

    @property
    def label(self):
        return self._label

    @property
    def domain(self):
        return self._domain

    @property
    def classname(self):
        return self._classname

    def __repr__(self):
        return f"Datum(impath={self._impath!r}, label={self._label}, classname={self._classname!r})"


class DatasetBase:
    """Holds ``train_x``, ``train_u``, ``val`` and ``test`` lists of ``Datum``.

    ``num_classes``, ``lab2cname`` and ``classnames`` are derived from ``train_x``.
    """

    dataset_dir = ""  # the directory name under DATASET.ROOT
    domains = []  # domain names, for multi-domain datasets

    def __init__(self, train_x=None, train_u=None, val=None, test=None):
        self._train_x = train_x
        self._train_u = train_u
        self._val = val
        self._test = test
        self._num_classes = self.get_num_classes(train_x)
        self._lab2cname, self._classnames = self.get_lab2cname(train_x)

    @property
    def train_x(self):
        return self._train_x

    @property
    def train_u(self):
        return self._train_u

    @property
    def val(self):
        return self._val

    @property
    def test(self):
        return self._test

    @property
    def lab2cname(self):
        return self._lab2cname

    @property
    def classnames(self):
        return self._classnames

    @property
    def num_classes(self):
        return self._num_classes

    @staticmethod
    def get_num_classes(data_source):
        return max(item.label for item in data_source) + 1

    @staticmethod
    def get_lab2cname(data_source):
        """Label -> class name map and the class names ordered by label."""
        pairs = {(item.label, item.classname) for item in data_source}
        lab2cname = {label: name for label, name in pairs}
        labels = sorted(lab2cname)
        return lab2cname, [lab2cname[label] for label in labels]

    def check_input_domains(self, source_domains, target_domains):
        assert len(source_domains) > 0, "source_domains (list) is empty"
        assert len(target_domains) > 0, "target_domains (list) is empty"
        self.is_input_domain_valid(source_domains)
        self.is_input_domain_valid(target_domains)

    def is_input_domain_valid(self, input_domains):
        for domain in input_domains:
            if domain not in self.domains:
                raise ValueError(f"Input domain must belong to {self.domains}, but got [{domain}]")

    def download_data(self, url, dst, from_gdrive=True):
        """Download and extract an archive (explicit user action only; never called at run time)."""
        import tarfile
        import zipfile

        from dassl.utils import download_url

        if not osp.exists(osp.dirname(dst)):
            import os
            os.makedirs(osp.dirname(dst))
        if from_gdrive:
            import gdown
            gdown.download(url, dst, quiet=False)
        else:
            download_url(url, dst)
        print("Extracting file ...")
        if dst.endswith(".zip"):
            with zipfile.ZipFile(dst, "r") as zf:
                zf.extractall(osp.dirname(dst))
        elif dst.endswith((".tar", ".tar.gz", ".tgz")):
            with tarfile.open(dst) as tar:
                tar.extractall(osp.dirname(dst), filter="data")
        else:
            raise NotImplementedError(f"Unknown archive type: {dst}")
        print(f"File extracted to {osp.dirname(dst)}")

    def generate_fewshot_dataset(self, *data_sources, num_shots=-1, repeat=False):
        """Sample ``num_shots`` items per label from each source with Python's ``random``.

        A label with fewer items keeps all of them (or samples with replacement when ``repeat``).
        Returns a list for one source and a list of lists for several.
        """
        if num_shots < 1:
            if len(data_sources) == 1:
                return data_sources[0]
            return data_sources
        print(f"Creating a {num_shots}-shot dataset")
        output = []
        for data_source in data_sources:
            tracker = self.split_dataset_by_label(data_source)
            dataset = []
            for label, items in tracker.items():
                if len(items) >= num_shots:
                    sampled = random.sample(items, num_shots)
                elif repeat:
                    sampled = random.choices(items, k=num_shots)
                else:
                    sampled = items
                dataset.extend(sampled)
            output.append(dataset)
        if len(output) == 1:
            return output[0]
        return output

    @staticmethod
    def split_dataset_by_label(data_source):
        """Label -> items, labels in order of first appearance."""
        output = defaultdict(list)
        for item in data_source:
            output[item.label].append(item)
        return output

    @staticmethod
    def split_dataset_by_domain(data_source):
        output = defaultdict(list)
        for item in data_source:
            output[item.domain].append(item)
        return output
