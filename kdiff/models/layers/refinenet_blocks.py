"""The blocks of NCSN's conditional RefineNet (Song & Ermon 2019).

After ``ncsn/models/cond_refinenet_dilated.py``: the conditional instance norm++
(``ConditionalInstanceNorm2dPlus``), the conditional residual block, and RefineNet's
residual conv unit (``CondRCUBlock``), chained residual pooling (``CondCRPBlock``),
multi-resolution fusion (``CondMSFBlock``) and the block that chains them
(``CondRefineBlock``). Every block takes the noise-level index as its class label;
convolutions have PyTorch's default initialization (``torch_uniform``), and the norm's
statistics are taken in float32.
"""

from __future__ import annotations

import keras
from keras import ops

from kdiff import checks
from kdiff.models.layers._common import PACKAGE, check_channels, check_rank, conv_layer, per_example
from kdiff.models.layers.resampling import avg_pool2, resampled_shape, resize_bilinear_align_corners

__all__ = [
    "ConditionalInstanceNorm2dPlus",
    "ConditionalResidualBlock",
    "CondRCUBlock",
    "CondCRPBlock",
    "CondMSFBlock",
    "CondRefineBlock",
]  # also torch_uniform: RefineNet's convolutions

_IN_EPSILON = 1e-5  # torch.nn.InstanceNorm2d, as in the NCSN reference code


def torch_uniform():
    """PyTorch's default conv initializer (kaiming_uniform, a=√5): U(±1/√fan_in).

    The reference NCSN code initializes every convolution so; the RefineNet blocks and the
    network's own first and last convolutions use it.

    Returns:
        A ``keras.initializers.VarianceScaling``.
    """
    return keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")


def _as_labels(labels):
    labels = ops.convert_to_tensor(labels)
    if "int" not in str(labels.dtype):
        labels = ops.cast(labels, "int32")
    return ops.reshape(labels, (-1,))


def _cin_initializer(num_features, bias):
    """γ, α ~ N(1, 0.02) and β = 0, as in NCSN's ConditionalInstanceNorm2dPlus."""

    def init(shape, dtype=None):
        scales = keras.random.normal((shape[0], 2 * num_features), mean=1.0, stddev=0.02,
                                     dtype=dtype)
        if not bias:
            return scales
        return ops.concatenate([scales, ops.zeros((shape[0], num_features), dtype=dtype)], axis=1)

    return init


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConditionalInstanceNorm2dPlus(keras.layers.Layer):
    """NCSN's conditional instance normalization++ (Song & Ermon 2019, eq. 8 of the paper).

    With μ_k, s_k the spatial mean and standard deviation of channel k, and m, v the mean
    and (unbiased) variance of the μ_k over the channels:
    ``z_k = γ[y]_k · ((x_k − μ_k)/s_k + α[y]_k · (μ_k − m)/√(v + ε)) + β[y]_k``.
    γ, α, β are rows of a ``[num_classes, 3·num_features]`` embedding looked up by the
    class (noise-level) index y; γ, α start at N(1, 0.02) and β at 0.

    Args:
        num_features: channels of the input.
        num_classes: number of classes (noise levels).
        bias: learn β (the reference's default); without it the embedding holds γ, α.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: ``[batch, height, width, num_features]``.
        labels: int tensor ``[batch]`` of class indices in [0, num_classes).

    Returns:
        A tensor shaped like ``inputs``.
    """

    def __init__(self, num_features, num_classes, bias=True, **kwargs):
        kwargs.setdefault("autocast", False)  # computes in float32, full-precision γ, α, β
        super().__init__(**kwargs)
        self.num_features = checks.int_in_range(num_features, "num_features", 2, None)
        self.num_classes = checks.positive_int(num_classes, "num_classes")
        self.bias = bool(bias)

    def build(self, input_shape):
        if input_shape[-1] != self.num_features:
            raise ValueError(
                f"Expected `inputs` with num_features={self.num_features} channels in "
                f"{self.name}. Received: inputs.shape={list(input_shape)}"
            )
        width = (3 if self.bias else 2) * self.num_features
        self.embedding = self.add_weight(
            name="embedding",
            shape=(self.num_classes, width),
            initializer=_cin_initializer(self.num_features, self.bias),
        )

    def call(self, inputs, labels):
        check_rank(inputs, 4, "inputs", self.name)
        x = ops.cast(inputs, "float32")
        params = ops.cast(ops.take(self.embedding, _as_labels(labels), axis=0), "float32")
        f = self.num_features
        parts = [per_example(part) for part in ops.split(params, [f, 2 * f] if self.bias else [f], axis=-1)]
        gamma, alpha = parts[0], parts[1]
        mean, var = ops.moments(x, axes=(1, 2), keepdims=True)  # per example and channel
        h = (x - mean) * ops.rsqrt(var + _IN_EPSILON)
        means = ops.reshape(mean, (-1, f))
        m = ops.mean(means, axis=-1, keepdims=True)
        v = ops.sum(ops.square(means - m), axis=-1, keepdims=True) / (f - 1)  # torch.var
        means = (means - m) * ops.rsqrt(v + _IN_EPSILON)
        h = h + per_example(means) * alpha
        out = gamma * h
        if self.bias:
            out = out + parts[2]
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, inputs_shape, labels_shape=None):
        return tuple(inputs_shape)

    def get_config(self):
        config = super().get_config()
        config.update(num_features=self.num_features, num_classes=self.num_classes, bias=self.bias)
        return config


def _check_resample(resample):
    if resample not in (None, "down"):
        raise ValueError(f"Expected `resample` None or 'down'. Received: resample={resample!r}")
    return resample


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConditionalResidualBlock(keras.layers.Layer):
    """NCSN's conditional residual block: CIN++ → ELU → conv → CIN++ → ELU → conv, + skip.

    Without dilation, ``resample="down"`` halves the resolution: the second convolution is
    followed by 2×2 mean pooling and the skip path is a 1×1 convolution + mean pooling
    (``ConvMeanPool``). With a dilation, every convolution is a dilated 3×3 one and the
    resolution is kept — the reference trades the later downsamplings for dilation.
    Convolutions have biases and PyTorch's default initialization.

    Args:
        output_dim: output channels.
        num_classes: number of noise levels for the conditional norms.
        resample: None or "down".
        dilation: None or the dilation rate of the 3×3 convolutions.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: ``[batch, height, width, input_dim]``.
        labels: int tensor ``[batch]`` of noise-level indices.

    Returns:
        ``[batch, height', width', output_dim]``; height' = height / 2 when
        ``resample="down"`` without dilation.
    """

    def __init__(self, output_dim, num_classes, resample=None, dilation=None, **kwargs):
        super().__init__(**kwargs)
        self.output_dim = checks.int_in_range(output_dim, "output_dim", 2, None)
        self.num_classes = checks.positive_int(num_classes, "num_classes")
        self.resample = _check_resample(resample)
        self.dilation = None if dilation is None else checks.positive_int(dilation, "dilation")

    def build(self, input_shape):
        check_channels(input_shape, None, "inputs", self.name)
        in_dim, out_dim = input_shape[-1], self.output_dim
        dt, init = self.dtype_policy, torch_uniform()
        dil = self.dilation or 1
        mid = in_dim if self.resample == "down" else out_dim
        self._pool = self.resample == "down" and self.dilation is None
        self.norm1 = ConditionalInstanceNorm2dPlus(in_dim, self.num_classes, name="norm1", dtype=dt)
        self.conv1 = conv_layer(mid, 3, "conv1", dt, dilation=dil, initializer=init)
        self.norm2 = ConditionalInstanceNorm2dPlus(mid, self.num_classes, name="norm2", dtype=dt)
        self.conv2 = conv_layer(out_dim, 3, "conv2", dt, dilation=dil, initializer=init)
        self.shortcut = None
        if in_dim != out_dim or self.resample is not None:
            size = 3 if self.dilation is not None else 1
            self.shortcut = conv_layer(out_dim, size, "shortcut", dt, dilation=dil, initializer=init)
            self.shortcut.build(tuple(input_shape))
        shape = tuple(input_shape)
        self.norm1.build(shape)
        self.conv1.build(shape)
        self.norm2.build(shape[:-1] + (mid,))
        self.conv2.build(shape[:-1] + (mid,))

    def call(self, inputs, labels):
        check_rank(inputs, 4, "inputs", self.name)
        h = self.conv1(keras.activations.elu(self.norm1(inputs, labels)))
        h = self.conv2(keras.activations.elu(self.norm2(h, labels)))
        skip = inputs if self.shortcut is None else self.shortcut(inputs)
        if self._pool:
            h, skip = avg_pool2(h), avg_pool2(skip)
        return skip + h

    def compute_output_shape(self, inputs_shape, labels_shape=None):
        pool = self.resample == "down" and self.dilation is None
        return resampled_shape(tuple(inputs_shape), False, pool)[:-1] + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(output_dim=self.output_dim, num_classes=self.num_classes,
                      resample=self.resample, dilation=self.dilation)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class CondRCUBlock(keras.layers.Layer):
    """RefineNet's residual conv unit, conditional: blocks of (CIN++ → ELU → conv3×3)×stages.

    Each of ``n_blocks`` blocks applies ``n_stages`` times CIN++, ELU and a bias-free 3×3
    convolution, and adds its input.

    Args:
        n_blocks: residual blocks.
        n_stages: norm-act-conv stages per block.
        num_classes: number of noise levels.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: ``[batch, height, width, features]``.
        labels: int tensor ``[batch]``.

    Returns:
        A tensor shaped like ``inputs``.
    """

    def __init__(self, n_blocks, n_stages, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.n_blocks = checks.positive_int(n_blocks, "n_blocks")
        self.n_stages = checks.positive_int(n_stages, "n_stages")
        self.num_classes = checks.positive_int(num_classes, "num_classes")

    def build(self, input_shape):
        check_channels(input_shape, None, "inputs", self.name)
        features = input_shape[-1]
        dt, init = self.dtype_policy, torch_uniform()
        self.norms, self.convs = [], []
        for i in range(self.n_blocks):
            for j in range(self.n_stages):
                norm = ConditionalInstanceNorm2dPlus(features, self.num_classes,
                                                     name=f"{i + 1}_{j + 1}_norm", dtype=dt)
                conv = conv_layer(features, 3, f"{i + 1}_{j + 1}_conv", dt, use_bias=False,
                             initializer=init)
                norm.build(tuple(input_shape))
                conv.build(tuple(input_shape))
                self.norms.append(norm)
                self.convs.append(conv)

    def call(self, inputs, labels):
        x = inputs
        for i in range(self.n_blocks):
            residual = x
            for j in range(self.n_stages):
                k = i * self.n_stages + j
                x = self.convs[k](keras.activations.elu(self.norms[k](x, labels)))
            x = x + residual
        return x

    def compute_output_shape(self, inputs_shape, labels_shape=None):
        return tuple(inputs_shape)

    def get_config(self):
        config = super().get_config()
        config.update(n_blocks=self.n_blocks, n_stages=self.n_stages, num_classes=self.num_classes)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class CondCRPBlock(keras.layers.Layer):
    """RefineNet's chained residual pooling, conditional, with average pooling (NCSN).

    ``x = ELU(x)``; then ``n_stages`` times: ``path = conv3×3(avgpool5×5(CIN++(path)))``
    and ``x = x + path``. The 5×5 pooling has stride 1 and zero padding 2 counted in the
    average (PyTorch's ``AvgPool2d`` default); the convolutions have no bias.

    Args:
        n_stages: pooling stages.
        num_classes: number of noise levels.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: ``[batch, height, width, features]``.
        labels: int tensor ``[batch]``.

    Returns:
        A tensor shaped like ``inputs``.
    """

    def __init__(self, n_stages, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.n_stages = checks.positive_int(n_stages, "n_stages")
        self.num_classes = checks.positive_int(num_classes, "num_classes")

    def build(self, input_shape):
        check_channels(input_shape, None, "inputs", self.name)
        features = input_shape[-1]
        dt, init = self.dtype_policy, torch_uniform()
        self.norms, self.convs = [], []
        for i in range(self.n_stages):
            norm = ConditionalInstanceNorm2dPlus(features, self.num_classes, name=f"norm_{i}",
                                                 dtype=dt)
            conv = conv_layer(features, 3, f"conv_{i}", dt, use_bias=False, initializer=init)
            norm.build(tuple(input_shape))
            conv.build(tuple(input_shape))
            self.norms.append(norm)
            self.convs.append(conv)

    def call(self, inputs, labels):
        x = keras.activations.elu(inputs)
        path = x
        for norm, conv in zip(self.norms, self.convs):
            path = ops.pad(norm(path, labels), [[0, 0], [2, 2], [2, 2], [0, 0]])
            path = conv(ops.average_pool(path, pool_size=5, strides=1, padding="valid"))
            x = path + x
        return x

    def compute_output_shape(self, inputs_shape, labels_shape=None):
        return tuple(inputs_shape)

    def get_config(self):
        config = super().get_config()
        config.update(n_stages=self.n_stages, num_classes=self.num_classes)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class CondMSFBlock(keras.layers.Layer):
    """RefineNet's multi-resolution fusion, conditional.

    Each input goes through CIN++ and a 3×3 convolution (with bias) to ``features``
    channels, is resized bilinearly (aligned corners) to the first input's resolution, and
    the results are summed.

    Args:
        features: output channels.
        num_classes: number of noise levels.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: list of ``[batch, h_i, w_i, c_i]`` tensors; the first sets the output size.
        labels: int tensor ``[batch]``.

    Returns:
        ``[batch, h_0, w_0, features]``.
    """

    def __init__(self, features, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.features = checks.positive_int(features, "features")
        self.num_classes = checks.positive_int(num_classes, "num_classes")

    def build(self, input_shape):
        shapes = _shape_list(input_shape, self.name)
        dt, init = self.dtype_policy, torch_uniform()
        self.norms, self.convs = [], []
        for i, shape in enumerate(shapes):
            check_channels(shape, None, f"inputs[{i}]", self.name)
            norm = ConditionalInstanceNorm2dPlus(shape[-1], self.num_classes, name=f"norm_{i}",
                                                 dtype=dt)
            conv = conv_layer(self.features, 3, f"conv_{i}", dt, initializer=init)
            norm.build(tuple(shape))
            conv.build(tuple(shape))
            self.norms.append(norm)
            self.convs.append(conv)

    def call(self, inputs, labels):
        size = (inputs[0].shape[1], inputs[0].shape[2])
        total = None
        for x, norm, conv in zip(inputs, self.norms, self.convs):
            h = resize_bilinear_align_corners(conv(norm(x, labels)), size)
            total = h if total is None else total + h
        return total

    def compute_output_shape(self, inputs_shape, labels_shape=None):
        first = tuple(inputs_shape[0])
        return first[:-1] + (self.features,)

    def get_config(self):
        config = super().get_config()
        config.update(features=self.features, num_classes=self.num_classes)
        return config


def _shape_list(input_shape, layer):
    if not isinstance(input_shape, (list, tuple)) or not input_shape or not isinstance(
            input_shape[0], (list, tuple)):
        raise ValueError(
            f"Expected a list of input tensors in {layer}. Received: input_shape={input_shape}"
        )
    return [tuple(s) for s in input_shape]


@keras.saving.register_keras_serializable(package=PACKAGE)
class CondRefineBlock(keras.layers.Layer):
    """RefineNet block of NCSN: adaptive RCUs per input → MSF → CRP → output RCU.

    Each input passes through a ``CondRCUBlock(2 blocks, 2 stages)``; several inputs are
    fused by ``CondMSFBlock`` at the first input's resolution; then ``CondCRPBlock``
    (2 stages) and an output ``CondRCUBlock`` (3 blocks if ``end`` else 1, 2 stages).

    Args:
        features: output channels.
        num_classes: number of noise levels.
        start: the deepest block (one input, no fusion; its channels must equal ``features``).
        end: the last block (a deeper output RCU).
        **kwargs: base layer arguments.

    Call arguments:
        inputs: list of ``[batch, h_i, w_i, c_i]`` tensors (the encoder feature first, then
            the previous refine block's output).
        labels: int tensor ``[batch]``.

    Returns:
        ``[batch, h_0, w_0, features]``.
    """

    def __init__(self, features, num_classes, start=False, end=False, **kwargs):
        super().__init__(**kwargs)
        self.features = checks.int_in_range(features, "features", 2, None)
        self.num_classes = checks.positive_int(num_classes, "num_classes")
        self.start = bool(start)
        self.end = bool(end)

    def build(self, input_shape):
        shapes = _shape_list(input_shape, self.name)
        if self.start and len(shapes) != 1:
            raise ValueError(
                f"Expected one input for a start block ({self.name}). Received: {len(shapes)}"
            )
        if len(shapes) == 1 and shapes[0][-1] != self.features:
            raise ValueError(
                f"Expected a single input with features={self.features} channels in "
                f"{self.name}. Received: inputs[0].shape={list(shapes[0])}"
            )
        dt, nc = self.dtype_policy, self.num_classes
        self.adapt = []
        for i, shape in enumerate(shapes):
            rcu = CondRCUBlock(2, 2, nc, name=f"adapt_{i}", dtype=dt)
            rcu.build(shape)
            self.adapt.append(rcu)
        self.msf = None
        if len(shapes) > 1:
            self.msf = CondMSFBlock(self.features, nc, name="msf", dtype=dt)
            self.msf.build(shapes)
        out_shape = shapes[0][:-1] + (self.features,)
        self.crp = CondCRPBlock(2, nc, name="crp", dtype=dt)
        self.crp.build(out_shape)
        self.output_rcu = CondRCUBlock(3 if self.end else 1, 2, nc, name="output", dtype=dt)
        self.output_rcu.build(out_shape)

    def call(self, inputs, labels):
        hs = [rcu(x, labels) for rcu, x in zip(self.adapt, inputs)]
        h = self.msf(hs, labels) if self.msf is not None else hs[0]
        return self.output_rcu(self.crp(h, labels), labels)

    def compute_output_shape(self, inputs_shape, labels_shape=None):
        return tuple(inputs_shape[0])[:-1] + (self.features,)

    def get_config(self):
        config = super().get_config()
        config.update(features=self.features, num_classes=self.num_classes, start=self.start,
                      end=self.end)
        return config
