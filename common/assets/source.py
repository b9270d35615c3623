"""The zoo's cached latents and heads as the inputs of a run.

The AP loads only its own encoder's latents; user ``k`` loads only the latents
and head of ``settings.users.models[k]``. Both pick the same semantic pilots, which
depend only on the training labels, ``pilot_fraction`` and the seed.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from common.assets.cache import Cache
from common.assets.data import ImageSplits, load_dataset, pilot_indices
from common.assets.heads import ClassifierHead, head_from_state, predict
from common.assets.store import HeadAsset, ModelLatents, encoder_latents, head_asset
from common.assets.zoo import EncoderSpec, get_zoo
from common.parties.user import UserData
from common.run.settings import RunSettings
from common.run.sources import APInputs, ProblemSource, fingerprint

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=2)
def _dataset(name: str, root: str | None, split_seed: int, download: bool) -> ImageSplits:
    return load_dataset(name, root=root, split_seed=split_seed, download=download)


def _role(users: list[int]) -> str:
    """``user 3``, ``users 0, 8``, or ``users 0, 8, … (125)`` for many."""
    if len(users) == 1:
        return f"user {users[0]}"
    shown = ", ".join(str(k) for k in users[:2])
    return f"users {shown}" if len(users) == 2 else f"users {shown}, … ({len(users)})"


class HeadPredictor:
    """The user's classifier as a plain latents → labels function.

    It pickles as the head's weights (the module is rebuilt on first use), so
    the processes of a simulation can share a user's prepared inputs.

    Parameters
    ----------
    head : HeadAsset
        The user's trained classifier head (its weights are kept).
    """

    def __init__(self, head: HeadAsset):
        self._state = head.state
        self._module: ClassifierHead | None = None

    def __call__(self, z: np.ndarray) -> np.ndarray:
        """Class predictions of the head.

        Parameters
        ----------
        z : ndarray, shape (N, d_k), float
            Latents, one row per sample (cast to float32).

        Returns
        -------
        ndarray, shape (N,), int64
            Predicted class labels.

        Raises
        ------
        ValueError
            ``z`` is not 2-D.
        """
        if self._module is None:
            self._module = head_from_state(self._state)
        return predict(self._module, z)

    def __getstate__(self) -> dict:
        """Pickle the weights only (the module is rebuilt after unpickling)."""
        return {"_state": self._state, "_module": None}


@dataclass(frozen=True)
class AssetSource(ProblemSource):
    """The zoo's assets in ``settings.cache_dir``; ``missing``: refuse to build what the
    cache lacks, with this advice (a device runs only what it built).

    The product's :class:`~common.run.sources.ProblemSource`: it implements
    ``num_users``, ``ap_inputs``, ``user_data`` and ``user_key`` from the run settings
    (dataset, zoo, ``users.models``, ``data.pilot_fraction``, seed). Every party
    builds (or reads from the cache) only its own encoder's latents and head; the AP
    and the users pick the same pilots (:meth:`pilots`). Latents are float32.

    Attributes
    ----------
    settings : RunSettings
        The run's validated settings.
    missing : str or None
        ``None``: build what the cache lacks; otherwise the advice of the
        :class:`~common.assets.cache.CacheError` raised instead of building.
    """

    settings: RunSettings
    missing: str | None = None

    def _cache(self) -> Cache:
        return Cache(self.settings.cache_dir, missing=self.missing)

    @property
    def num_users(self) -> int:
        """The number of users, one per model of ``settings.users.models``."""
        return self.settings.num_users

    def _data(self) -> ImageSplits:
        s = self.settings
        return _dataset(s.data.name, s.data.root, s.data.split_seed, s.data.download)

    def _latents(self, spec, progress: bool = False) -> ModelLatents:
        s = self.settings
        return encoder_latents(
            spec,
            self._data(),
            self._cache(),
            progress=progress,
            weights_dir=s.weights_dir,
            device=s.device,  # resolved only if the latents must be built
            precision=s.latents.precision,
            batch_size=s.latents.batch_size,
        )

    def _head(self, latents: ModelLatents) -> HeadAsset:
        return head_asset(latents, self._data(), self.settings.users.head_seed, self._cache())

    def test_size(self) -> int:
        """Samples of the test split.

        Returns
        -------
        int
            ``n_test``.

        Raises
        ------
        common.assets.data.DatasetNotFoundError
            The dataset's files are absent and cannot be downloaded (a
            ``FileNotFoundError``).
        """
        return int(self._data().labels["test"].shape[0])

    def pilots(self) -> np.ndarray:
        """The semantic pilots: positions in the training split, the same for every party.

        ``round(pilot_fraction · count)`` samples per class (at least one), drawn from
        the seed's ``PILOTS`` stream; the whole split when ``pilot_fraction = 1``
        (:func:`~common.assets.data.pilot_indices`; docs/ALGORITHM.md, §5).

        Returns
        -------
        ndarray, shape (n,), int64
            Sorted sample indices into the training split.

        Raises
        ------
        common.assets.data.DatasetNotFoundError
            The dataset's files are absent and cannot be downloaded (a
            ``FileNotFoundError``).
        """
        s = self.settings
        return pilot_indices(self._data().labels["train"], s.data.pilot_fraction, s.seed)

    def ap_inputs(self) -> APInputs:
        """The AP encoder's latents of the pilots and of the test split.

        Returns
        -------
        APInputs
            ``pilots`` (n × d) and ``test`` (n_test × d), float32.

        Raises
        ------
        ValueError
            The zoo named in the settings is unknown.
        common.assets.cache.CacheError
            The cache cannot be used, or lacks an entry that ``missing`` forbids building
            (a ``RuntimeError``).
        common.assets.data.DatasetNotFoundError
            The dataset's files are absent and cannot be downloaded (a
            ``FileNotFoundError``).
        """
        latents = self._latents(get_zoo(self.settings.users.zoo).ap)
        pilots = self.pilots()
        return APInputs(
            self.settings.data.name,
            latents.model,
            latents.splits["train"][pilots],
            latents.splits["test"],
            fingerprint=fingerprint(latents.checksum),
        )

    def user_key(self, index: int) -> str:
        """The settings that name a user's data (their scope says so: the assets, the
        pilots and where they are read from) and the user's model.

        Parameters
        ----------
        index : int
            The user, in ``0..num_users-1``.

        Returns
        -------
        str
            Canonical JSON (sorted keys), also naming the source kind and ``missing``.

        Raises
        ------
        IndexError
            ``index`` is not a user of the run.
        """
        fields = self.settings.identity(lambda scope: scope.names_data)
        fields["model"] = self.settings.users.models[index]
        return json.dumps({"source": "assets", "missing": self.missing, **fields}, sort_keys=True)

    def user_data(self, index: int) -> UserData:
        """User ``index``'s latents and classifier head, built or read from the cache.

        Parameters
        ----------
        index : int
            The user, in ``0..num_users-1`` (model ``settings.users.models[index]``).

        Returns
        -------
        UserData
            Its pilot latents (n × d_k, float32), test latents (n_test × d_k, float32),
            test labels (n_test,) and a :class:`HeadPredictor`.

        Raises
        ------
        IndexError
            ``index`` is not a user of the run.
        KeyError
            The user's model is not in the zoo.
        ValueError
            The zoo named in the settings is unknown.
        common.assets.cache.CacheError
            The cache cannot be used, or lacks an entry that ``missing`` forbids building
            (a ``RuntimeError``).
        common.assets.data.DatasetNotFoundError
            The dataset's files are absent and cannot be downloaded (a
            ``FileNotFoundError``).
        """
        spec = get_zoo(self.settings.users.zoo).users[self.settings.users.models[index]]
        latents = self._latents(spec)
        labels = self._data().labels
        head = self._head(latents)
        return UserData(
            name=latents.model,
            pilots=latents.splits["train"][self.pilots()],
            test=latents.splits["test"],
            test_labels=labels["test"],
            predict=HeadPredictor(head),
            fingerprint=fingerprint(latents.checksum, head.checksum),
        )

    def parties(self) -> list[tuple[str, EncoderSpec]]:
        """Every party's role and encoder: the AP, then each user model once (the users
        of one model share its assets).

        Returns
        -------
        list of tuple of (str, EncoderSpec)
            ``("AP", spec)`` then, per model in the order of its first user k,
            ``("user k", spec)``, or ``("users k, …", spec)`` when several users run it.

        Raises
        ------
        ValueError
            The zoo named in the settings is unknown.
        KeyError
            A user's model is not in the zoo.
        """
        zoo = get_zoo(self.settings.users.zoo)
        runs: dict[str, list[int]] = {}
        for k, name in enumerate(self.settings.users.models):
            runs.setdefault(name, []).append(k)
        users = [(_role(indices), zoo.users[name]) for name, indices in runs.items()]
        return [("AP", zoo.ap), *users]

    def warm(
        self,
        progress: bool = True,
        parties: list[tuple[str, EncoderSpec]] | None = None,
        *,
        heads: bool = True,
    ) -> pd.DataFrame:
        """Build (or verify in the cache) the encoder, latents and (``heads``) classifier
        head of ``parties`` (default: every party of the run); a table.

        Parameters
        ----------
        progress : bool, optional
            Show progress while building latents. Default True.
        parties : list of tuple of (str, EncoderSpec), optional
            The parties to build, as :meth:`parties` lists them (default: all).
        heads : bool, optional
            Build the classifier heads too. Default True.

        Returns
        -------
        pandas.DataFrame
            One row per party: ``role``, ``model``, ``timm_name``, ``latent_dim``,
            ``clean_test_accuracy`` (NaN without heads) and ``cached`` (everything was
            already in the cache).

        Raises
        ------
        ValueError
            The zoo named in the settings is unknown.
        common.assets.cache.CacheError
            The cache cannot be used, or lacks an entry that ``missing`` forbids building
            (a ``RuntimeError``).
        common.assets.data.DatasetNotFoundError
            The dataset's files are absent and cannot be downloaded (a
            ``FileNotFoundError``).
        """
        rows = []
        for role, spec in self.parties() if parties is None else parties:
            latents = self._latents(spec, progress=progress)
            head = self._head(latents) if heads else None
            rows.append(
                {
                    "role": role,
                    "model": spec.name,
                    "timm_name": spec.timm_name,
                    "latent_dim": latents.dim,
                    "clean_test_accuracy": head.clean_test_accuracy if head else float("nan"),
                    "cached": bool(latents.meta.get("cached"))
                    and (head is None or bool(head.meta.get("cached"))),
                }
            )
        return pd.DataFrame(rows)
