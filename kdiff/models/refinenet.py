"""``RefineNet``, NCSN's score network: the conditional dilated RefineNet of Song & Ermon (2019).

``CondRefineNetDilated`` of ``ncsn/models/cond_refinenet_dilated.py`` (survey, sections 4.3
and 5.2.3): a 3×3 ``conv_in``; four stages of two conditional residual blocks — stage 1 at
ngf channels, stage 2 at 2·ngf and half the resolution, stages 3 and 4 at 2·ngf with
dilation 2 and 4 in place of further downsampling; four RefineNet blocks (RCU → MSF → CRP →
RCU) back up the path; then CIN++ → ELU → 3×3 ``conv_out``. Every normalization is the
conditional instance norm++, every activation an ELU, and the pooling of the CRP blocks is
average pooling. The class index selects the noise level σ_i.

By default the network is kept pure: it neither maps data to [−1, 1] nor divides by σ —
preprocessing and σ handling belong to the data pipeline and to the NCSN wrapper. The
reference does ``2x − 1`` inside ``forward`` (when its ``logit_transform`` is off), before
the zero-padded first convolution, so that the padding is 0 in [−1, 1] space: no change of
``conv_in``'s weights reproduces it at the borders. ``center_input=True`` does the same,
and is what a network converted from the reference's checkpoints
(``kdiff.convert.ncsn``) uses.
"""

from __future__ import annotations

import re

import keras
from keras import ops

from kdiff import checks
from kdiff.models import _shared
from kdiff.models import layers as L
from kdiff.models.layers._common import Conv2D
from kdiff.models.layers.refinenet_blocks import torch_uniform

__all__ = ["RefineNet"]

_PATH_NAME = re.compile(r"refine_net(_\d+)?")  # Keras' name for a RefineNet inside a list


def _read_weights_saved_as_ncsn(store):
    """Points a weights store at a RefineNet's weights as saved while it was called ``NCSN``.

    Keras (3.x) files address a layer held in a list — as a diffusion model holds its
    network — by its class name, snake-cased: the RefineNet's weights were saved under
    ``…/ncsn`` and are now looked up under ``…/refine_net``. When this RefineNet's path is
    missing and the old one is there, the store's ``get`` reads the old path, for this
    network and everything below it. Files written since the rename, and stores that are
    not Keras' H5 store, are left as they are.

    Args:
        store: what Keras hands ``load_own_variables``: for ``.keras`` and ``.weights.h5``
            files, its ``H5IOStore`` positioned at this network's path.
    """
    path, h5_file = getattr(store, "_h5_entry_path", None), getattr(store, "h5_file", None)
    if not path or h5_file is None or path in h5_file:
        return
    head, _, name = path.rpartition("/")
    match = _PATH_NAME.fullmatch(name)
    if match is None:
        return
    old = (head + "/" if head else "") + "ncsn" + (match.group(1) or "")
    if old not in h5_file:
        return
    get = store.get

    def get_old_path(inner_path):
        if inner_path == path or inner_path.startswith(path + "/"):
            inner_path = old + inner_path[len(path):]
        return get(inner_path)

    store.get = get_old_path
    store.get(path)  # positioned at the old path, as Keras left it at the new one


# Registered as "kdiff.models>NCSN", the name it was saved under before it was renamed
# (``kdiff.NCSN`` is the diffusion model), so that every saved model loads.
@keras.saving.register_keras_serializable(package="kdiff.models", name="NCSN")
class RefineNet(keras.Model):
    """Noise-conditional score network s_θ(x, i) (CondRefineNetDilated of NCSN).

    The network of ``kdiff.NCSN`` (the diffusion model); ``kdiff.models.NCSN`` is its
    old, deprecated name.

    Args:
        image_size: height and width of the (square) images; even.
        in_channels: image channels.
        num_classes: number of noise levels L (labels index σ_1 … σ_L).
        ngf: feature channels of the first stage (the reference configs: 64 for MNIST, 128
            for CelebA and CIFAR-10); the deeper stages have 2·ngf.
        center_input: map ``x`` to ``2x − 1`` first, as the reference's ``forward`` does
            for data in [0, 1] (``logit_transform: false``); off by default.
        **kwargs: base model arguments (``name``, ``dtype``).

    Call arguments:
        x: float tensor ``[batch, image_size, image_size, in_channels]``, or a list
            ``[x, labels]``.
        labels: int tensor ``[batch]`` of noise-level indices in [0, num_classes) (a
            scalar is broadcast to the batch).

    Returns:
        ``[batch, image_size, image_size, in_channels]``: the score estimate, in the compute
        dtype.
    """

    def __init__(self, image_size, in_channels=3, num_classes=10, ngf=64, center_input=False,
                 **kwargs):
        super().__init__(**kwargs)
        self._allow_non_tensor_positional_args = True
        self.image_size = checks.positive_int(image_size, "image_size")
        if self.image_size % 2:
            raise ValueError(
                "Expected `image_size` even (the second stage halves the resolution). "
                f"Received: image_size={self.image_size}"
            )
        self.in_channels = checks.positive_int(in_channels, "in_channels")
        self.num_classes = checks.positive_int(num_classes, "num_classes")
        self.ngf = checks.int_in_range(ngf, "ngf", 2, None)
        if not isinstance(center_input, bool):
            raise ValueError(
                f"Expected `center_input` True or False. Received: center_input={center_input!r}"
            )
        self.center_input = center_input
        self._make_layers()
        self.build()

    def _make_layers(self):
        dt, nc, ngf = self.dtype_policy, self.num_classes, self.ngf
        init = torch_uniform()
        self.conv_in = Conv2D(ngf, 3, padding="same", kernel_initializer=init,
                                           name="conv_in", dtype=dt)

        def crb(out, name, resample=None, dilation=None):
            return L.ConditionalResidualBlock(out, nc, resample=resample, dilation=dilation,
                                              name=name, dtype=dt)

        self.res1 = [crb(ngf, "res1_0"), crb(ngf, "res1_1")]
        self.res2 = [crb(2 * ngf, "res2_0", "down"), crb(2 * ngf, "res2_1")]
        self.res3 = [crb(2 * ngf, "res3_0", "down", 2), crb(2 * ngf, "res3_1", None, 2)]
        self.res4 = [crb(2 * ngf, "res4_0", "down", 4), crb(2 * ngf, "res4_1", None, 4)]
        self.refine1 = L.CondRefineBlock(2 * ngf, nc, start=True, name="refine1", dtype=dt)
        self.refine2 = L.CondRefineBlock(2 * ngf, nc, name="refine2", dtype=dt)
        self.refine3 = L.CondRefineBlock(ngf, nc, name="refine3", dtype=dt)
        self.refine4 = L.CondRefineBlock(ngf, nc, end=True, name="refine4", dtype=dt)
        # The output head runs in the variable dtype (float32 under mixed precision).
        head_dt = keras.DTypePolicy(self.dtype_policy.variable_dtype)
        self.norm_out = L.ConditionalInstanceNorm2dPlus(ngf, nc, name="norm_out", dtype=head_dt)
        self.conv_out = Conv2D(self.in_channels, 3, padding="same",
                                            kernel_initializer=init, name="conv_out",
                                            dtype=head_dt)

    def build(self, input_shape=None):
        """Creates every weight (shapes come from the constructor; ``input_shape`` is unused)."""
        if self.built:
            return
        x = keras.KerasTensor((1, self.image_size, self.image_size, self.in_channels),
                              dtype=self.compute_dtype)
        labels = keras.KerasTensor((1,), dtype="int32")
        self._forward(x, labels)  # a symbolic pass: every sublayer builds itself

    def load_own_variables(self, store):
        """Keras' loading, which also reads files saved before the rename (the class was
        ``NCSN``): see ``_read_weights_saved_as_ncsn``.

        Args:
            store: the weights store Keras positions at this network.
        """
        _read_weights_saved_as_ncsn(store)
        super().load_own_variables(store)

    def get_build_config(self):
        return {"input_shape": [None, self.image_size, self.image_size, self.in_channels]}

    def build_from_config(self, config):
        self.build()

    def call(self, x, labels=None):
        if isinstance(x, (list, tuple)):
            if labels is not None or len(x) != 2:
                raise ValueError(
                    "Expected the network called as network(x, labels) or network([x, labels]). "
                    f"Received: a {type(x).__name__} of {len(x)} inputs"
                    + (" plus labels" if labels is not None else "")
                )
            x, labels = x
        if labels is None:
            raise ValueError(
                "Expected `labels` (noise-level indices [batch]). Received: labels=None"
            )
        x = ops.convert_to_tensor(x)
        expected = [None, self.image_size, self.image_size, self.in_channels]
        shape = list(x.shape)
        if len(shape) != 4 or any(e is not None and s is not None and s != e
                                  for s, e in zip(shape, expected)):
            raise ValueError(f"Expected `x` of shape {expected}. Received: x.shape={shape}")
        if not keras.backend.is_float_dtype(x.dtype):
            raise ValueError(
                f"Expected `x` to be a floating-point tensor. Received: dtype={x.dtype}"
            )
        labels = ops.convert_to_tensor(labels)
        if keras.backend.is_float_dtype(labels.dtype):
            raise ValueError(
                "Expected integer noise-level indices `labels` (map σ to its index in the "
                f"NCSN wrapper). Received: dtype={labels.dtype}"
            )
        if len(labels.shape) == 0:
            labels = ops.broadcast_to(labels, (ops.shape(x)[0],))
        elif len(labels.shape) != 1:
            raise ValueError(
                f"Expected `labels` of shape [batch]. Received: labels.shape={list(labels.shape)}"
            )
        return self._forward(ops.cast(x, self.compute_dtype), ops.cast(labels, "int32"))

    def _forward(self, x, labels):
        def stage(blocks, h):
            for block in blocks:
                h = block(h, labels)
            return h

        if self.center_input:
            x = 2.0 * x - 1.0
        h = self.conv_in(x)
        layer1 = stage(self.res1, h)
        layer2 = stage(self.res2, layer1)
        layer3 = stage(self.res3, layer2)
        layer4 = stage(self.res4, layer3)
        ref1 = self.refine1([layer4], labels)
        ref2 = self.refine2([layer3, ref1], labels)
        ref3 = self.refine3([layer2, ref2], labels)
        h = self.refine4([layer1, ref3], labels)
        h = keras.activations.elu(self.norm_out(h, labels))
        return self.conv_out(h)

    def compute_output_shape(self, x_shape, labels_shape=None):
        return _shared.image_output_shape(x_shape, self.image_size, self.in_channels)

    def get_config(self):
        config = super().get_config()
        config.update(image_size=self.image_size, in_channels=self.in_channels,
                      num_classes=self.num_classes, ngf=self.ngf,
                      center_input=self.center_input)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def cifar10(cls, **overrides):
        """The CIFAR-10 model of NCSN: 32×32×3, ngf 128, L = 10 noise levels.

        Args:
            **overrides: constructor arguments to change.

        Returns:
            A RefineNet.
        """
        config = dict(image_size=32, in_channels=3, num_classes=10, ngf=128)
        config.update(overrides)
        return cls(**config)

    @classmethod
    def small(cls, image_size=16, in_channels=1, num_classes=10, **overrides):
        """A CPU-sized RefineNet: ngf 16.

        Args:
            image_size: image height and width (even).
            in_channels: image channels.
            num_classes: number of noise levels.
            **overrides: other constructor arguments to change.

        Returns:
            A RefineNet.
        """
        config = dict(image_size=image_size, in_channels=in_channels, num_classes=num_classes,
                      ngf=16)
        config.update(overrides)
        return cls(**config)
