"""Diffusion models as ``keras.Model`` subclasses: a network, its process, a loss, EMA.

One class per family — ``DDPM`` (DDIM samples the same trained model), ``NCSN`` and
``ScoreSDE``. Each wraps a network ``network(x, level[, y])`` with a schedule, σ ladder
or SDE and a loss from ``kdiff.losses``; ``train_step`` stays Keras-short: tape → loss →
apply → EMA → metrics. The exponential moving average of the weights lives in
``ema_network`` beside the raw ``network`` and is what ``generate``, ``kdiff.sample`` and
``kdiff.export`` use.

Randomness in training (timesteps / noise levels and Gaussian noise) is stateless,
derived from the model's ``seed`` and the optimizer's step, and drawn for the whole
global batch on every replica before each replica takes its slice: single-device and
``MirroredStrategy`` training with the same global batch see the same draws, and the
hand-written loss is scaled by 1/replicas so that summed gradients are the global mean.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

import keras

from kdiff import checks, _random, losses
from kdiff.samplers import guidance, registry, request
from kdiff import schedules as schedules_lib
from kdiff import sde as sde_lib
from kdiff.samplers.draw import DrawCache, SamplingSpec

__all__ = ["DiffusionModel", "DDPM", "NCSN", "ScoreSDE"]


def _replica_slice(values, local):
    """The current replica's slice of values drawn for the global batch."""
    context = tf.distribute.get_replica_context()
    if context is None:
        return values
    start = tf.cast(context.replica_id_in_sync_group, tf.int32) * local
    return values[start : start + local]


def _num_replicas():
    return tf.distribute.get_strategy().num_replicas_in_sync


class _Twins:
    """A model's copies of its networks in other precisions (a plain object, so that Keras
    neither tracks their weights as the model's nor saves them)."""

    def __init__(self):
        self._networks = {}

    def get(self, key, build):
        """The copy under ``key``, built by ``build()`` on first use."""
        if key not in self._networks:
            self._networks[key] = build()
        return self._networks[key]


class DiffusionModel(keras.Model):
    """Base class: a network, its EMA copy, the train / test steps and ``generate``.

    Subclasses set ``process`` (a ``kdiff.process.Process``: the schedule, σ ladder or
    SDE, which also gives the family, the default sampler and the default data range)
    and define ``_loss(network_fn, x, seed)``.

    Args:
        network: a Keras layer or model called as ``network(x, level)`` (or
            ``network(x, level, y)`` when ``num_classes`` is set).
        image_shape: (height, width, channels); read from the network's ``image_size``
            and ``in_channels`` when None.
        num_classes: classes for class-conditional training (data is ``(x, y)``). A
            network with ``num_classes + 1`` classes has a null class (index
            ``num_classes``) for classifier-free guidance (``kdiff.samplers.guidance``).
        label_dropout: the probability that a training label is replaced by the null
            class (Ho & Salimans 2022); None: 0.1 when the network has a null class,
            else 0.
        ema_decay: decay of the weights' exponential moving average (0 disables it).
        ema_warmup: use min(decay, (1 + n)/(10 + n)) at step n, so the average is not
            dominated by the random initialization early on.
        seed: seed of the training noise (stateless: training is reproducible).
        data_range: (low, high) of the data the model is trained on (default: the
            process's, (−1, 1) or NCSN's (0, 1)).
        default_sampler: the sampler ``generate`` and ``kdiff.sample`` use when none is
            named (default: the process's); ``kdiff.from_diffusers`` sets the source
            scheduler's.
        sampler_defaults: the model's own option defaults per sampler, ``{name: {option:
            value}}``, applied under what a call passes (``kdiff.from_diffusers`` sets the
            source scheduler's settings, e.g. ``{"ddim": {"clip_x0": 1.0, "spacing":
            "trailing", ...}}``); saved in ``get_config`` and an export's ``config.json``.
        **kwargs: ``keras.Model`` arguments (``name``, ``dtype``).
    """

    def __init__(
        self,
        network,
        *,
        image_shape=None,
        num_classes=None,
        label_dropout=None,
        ema_decay=0.9999,
        ema_warmup=True,
        seed=0,
        data_range=None,
        default_sampler=None,
        sampler_defaults=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(network, keras.layers.Layer):
            raise ValueError(
                "Expected `network` to be a Keras layer or model called as network(x, t). "
                f"Received: network={network!r}"
            )
        self.image_shape = self._image_shape(network, image_shape)
        self.num_classes = None if num_classes is None else checks.positive_int(num_classes, "num_classes")
        self.null_label = self._null_label(network)
        self.label_dropout = self._label_dropout(label_dropout, network)
        if not 0 <= ema_decay < 1:
            raise ValueError(f"Expected `ema_decay` in [0, 1). Received: ema_decay={ema_decay!r}")
        self.ema_decay = float(ema_decay)
        self.ema_warmup = bool(ema_warmup)
        self.seed = checks.int_in_range(seed, "seed", 0, None)
        low, high = (float(v) for v in (self.process.default_data_range if data_range is None else data_range))
        if not low < high:
            raise ValueError(f"Expected `data_range` (low, high) with low < high. Received: {data_range!r}")
        self.data_range = (low, high)
        self._own_default_sampler, self._own_sampler_defaults = request.check_defaults(
            self.process, default_sampler, sampler_defaults)
        self.network = network
        self.ema_network = keras.models.clone_model(network) if hasattr(network, "get_config") else None
        if self.ema_network is None:
            raise ValueError(f"Expected a `network` with get_config (to copy for EMA). Received: {network!r}")
        self.ema_network.trainable = False
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self._draw_cache = DrawCache()  # kdiff.sample's traced loops, reused across calls
        self._twins = _Twins()  # inference_network's copies in other precisions
        self._build_networks()
        self.built = True

    @property
    def family(self):
        """The diffusion family: "ddpm", "ncsn" or "sde" (the process's)."""
        return self.process.family

    @property
    def default_sampler(self):
        """The sampler ``generate`` uses when none is named (``default_sampler=``, else the process's)."""
        return self._own_default_sampler or self.process.default_sampler

    @default_sampler.setter
    def default_sampler(self, name):
        """Sets the sampler ``generate``, ``kdiff.sample`` and an export use when none is named
        (checked to walk the process; None: the process's)."""
        self._own_default_sampler, _ = request.check_defaults(self.process, name)
        self._draw_cache = DrawCache()

    @property
    def sampler_defaults(self):
        """The option defaults per sampler: the family's (a learned variance) under the
        model's own (``sampler_defaults=``), as ``{name: {option: value}}``."""
        return request.merge_defaults(self._sampler_defaults(), self._own_sampler_defaults)

    # ------------------------------------------------------------------ construction

    @staticmethod
    def _image_shape(network, image_shape):
        if image_shape is None:
            size, channels = getattr(network, "image_size", None), getattr(network, "in_channels", None)
            if size is None or channels is None:
                raise ValueError(
                    "Expected `image_shape` (height, width, channels), or a network with "
                    f"`image_size` and `in_channels`. Received: image_shape=None, network={network!r}"
                )
            image_shape = (size, size, channels) if np.ndim(size) == 0 else (*size, channels)
        image_shape = tuple(int(d) for d in image_shape)
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(
                f"Expected `image_shape` (height, width, channels). Received: image_shape={image_shape!r}"
            )
        size = getattr(network, "image_size", None)
        if size is not None and np.ndim(size) == 0 and image_shape[:2] != (size, size):
            raise ValueError(
                f"Expected `image_shape` to match the network's image_size={size}. "
                f"Received: image_shape={image_shape!r}"
            )
        channels = getattr(network, "in_channels", None)
        if channels is not None and image_shape[2] != channels:
            raise ValueError(
                f"Expected `image_shape` with the network's in_channels={channels}. "
                f"Received: image_shape={image_shape!r}"
            )
        return image_shape

    def _null_label(self, network):
        """The null class's index when the network has one class more than the data."""
        classes = getattr(network, "num_classes", None)
        if self.num_classes is not None and classes == self.num_classes + 1:
            return self.num_classes
        return None

    def _label_dropout(self, label_dropout, network):
        if label_dropout is None:
            return 0.1 if self.null_label is not None else 0.0
        if isinstance(label_dropout, bool) or not isinstance(label_dropout, (int, float)) or not 0 <= label_dropout < 1:
            raise ValueError(f"Expected `label_dropout` in [0, 1). Received: label_dropout={label_dropout!r}")
        if label_dropout > 0 and self.null_label is None:
            received = f"num_classes={self.num_classes}, network num_classes={getattr(network, 'num_classes', None)}"
            if self.num_classes is None:
                raise ValueError(
                    "Expected `num_classes` K and a network with K + 1 classes (the null class K, which "
                    f"dropped labels become) for label_dropout={label_dropout}. Received: {received}"
                )
            raise ValueError(
                f"Expected a network with num_classes={self.num_classes + 1} (the {self.num_classes} classes and "
                f"the null class {self.num_classes}, which dropped labels become) for "
                f"label_dropout={label_dropout}. Received: {received}"
            )
        return float(label_dropout)

    def _dummy_level(self):
        return tf.zeros([1], tf.int32)

    def _call_network(self, network, x, level, y=None, training=False):
        if self.num_classes is not None:
            if y is None:
                raise ValueError("Expected class labels `y` for a class-conditional model. Received: y=None")
            return network(x, level, tf.cast(y, tf.int32), training=training)
        return network(x, level, training=training)

    def _build_networks(self):
        x = tf.zeros((1,) + self.image_shape)
        y = tf.zeros([1], tf.int32) if self.num_classes is not None else None
        for network in (self.network, self.ema_network):
            out = self._call_network(network, x, self._dummy_level(), y)
        self._check_output(tuple(out.shape[1:]))
        self.ema_network.set_weights(self.network.get_weights())

    def _check_output(self, shape):
        if shape != self.image_shape:
            raise ValueError(
                f"Expected the network to return [batch, *{list(self.image_shape)}] for "
                f"{type(self).__name__}. Received: output shape {[None, *shape]}"
            )

    def build(self, input_shape=None):
        """The networks are built at construction; kept for Keras' loading path."""
        self.built = True

    def call(self, inputs, training=False):
        """Calls the raw network: ``inputs`` is ``[x, level]`` (or ``[x, level, y]``)."""
        return self.network(*inputs, training=training)

    def make_train_function(self, force=False):
        """Keras' train function, with the optimizer's slots built for the network's
        weights first.

        Keras builds them on the first ``train_step`` otherwise, inside its trace: a
        ``tf.function`` that creates variables is traced twice, which for a U-Net costs
        more than the first epoch of a small run (docs/benchmarks.md).
        """
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.network.trainable_weights)
        return super().make_train_function(force=force)

    def fit(self, *args, **kwargs):
        """``keras.Model.fit``, whose default ``verbose="auto"`` suits where stdout goes.

        Keras' "auto" is its progress bar, which redraws itself with backspaces, carriage
        returns and ANSI colours even into a file or a pipe; here "auto" is the bar on a
        terminal (or Jupyter) and one line per epoch (``verbose=2``) otherwise. An explicit
        0, 1 or 2 is Keras' own.

        Args:
            *args, **kwargs: ``keras.Model.fit``'s (``verbose`` the fifth positional).

        Returns:
            The ``keras.callbacks.History``.
        """
        from kdiff import _terminal

        if len(args) > 4:  # x, y, batch_size, epochs, verbose
            args = args[:4] + (_terminal.keras_verbosity(args[4]),) + args[5:]
        else:
            kwargs["verbose"] = _terminal.keras_verbosity(kwargs.get("verbose", "auto"))
        return super().fit(*args, **kwargs)

    @property
    def metrics(self):
        return [self.loss_tracker]

    # ------------------------------------------------------------------ training

    def _unpack(self, data):
        if isinstance(data, (tuple, list)):
            x = data[0]
            y = data[1] if len(data) > 1 else None
        elif isinstance(data, dict):
            x, y = data["image"], data.get("label")
        else:
            x, y = data, None
        x = tf.convert_to_tensor(x)
        if not x.dtype.is_floating:
            raise ValueError(
                f"Expected float images in {self.data_range} (scale uint8 images first). "
                f"Received: dtype={x.dtype.name}"
            )
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(
                f"Expected images of shape [batch, *{list(self.image_shape)}]. "
                f"Received: shape={x.shape.as_list()}"
            )
        if self.num_classes is not None and y is None:
            raise ValueError("Expected (images, labels) batches for a class-conditional model.")
        return tf.cast(x, "float32"), (None if self.num_classes is None else y)

    def _step_seed(self, offset):
        iterations = self.optimizer.iterations if self.optimizer is not None else 0
        return _random.fold_in(_random.seed_pair(self.seed), tf.cast(iterations, tf.int64) * 2 + offset)

    def _global_draws(self, x, draw):
        """``draw(global_batch)`` → tensors for the whole global batch, then this replica's slice."""
        local = tf.shape(x)[0]
        values = draw(local * _num_replicas())
        return [_replica_slice(v, local) for v in values]

    def _normal(self, n, seed):
        return tf.random.stateless_normal(tf.concat([[n], self.image_shape], 0), seed=seed)

    def compute_diffusion_loss(self, x, y=None, training=False, seed=None):
        """The family's loss on a batch (float32 images in ``data_range``).

        Args:
            x: images [batch, H, W, C].
            y: class labels [batch] for a class-conditional model.
            training: passed to the network (dropout).
            seed: seed pair of the random draws (default: from ``seed`` and the step).

        Returns:
            The scalar mean loss over the (replica's) batch.
        """
        seed = self._step_seed(0) if seed is None else seed
        if training and self.label_dropout > 0 and y is not None:
            (uniform,) = self._global_draws(
                x, lambda n: (tf.random.stateless_uniform([n], _random.fold_in(seed, 3)),)
            )
            y = guidance.drop_labels(y, self.null_label, self.label_dropout, uniform)
        return self._loss(lambda x_, level: self._call_network(self.network, x_, level, y, training), x, seed)

    def train_step(self, data):
        x, y = self._unpack(data)
        with tf.GradientTape() as tape:
            loss = self.compute_diffusion_loss(x, y, training=True)
            # A hand-written loss is not divided by the replica count the way Keras'
            # built-in losses are: do it here, so that the summed gradients are the mean.
            scaled = self.optimizer.scale_loss(loss / tf.cast(_num_replicas(), loss.dtype))
        weights = self.network.trainable_weights
        gradients = tape.gradient(scaled, weights)
        decay = self._ema_decay_now()  # n = the updates before this one
        self.optimizer.apply(gradients, weights)
        self._update_ema(decay)
        self.loss_tracker.update_state(loss, sample_weight=tf.shape(x)[0])
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        x, y = self._unpack(data)
        seed = _random.fold_in(_random.seed_pair(self.seed), -1)
        loss = self.compute_diffusion_loss(x, y, training=False, seed=seed)
        self.loss_tracker.update_state(loss, sample_weight=tf.shape(x)[0])
        return {"loss": self.loss_tracker.result()}

    def _ema_decay_now(self):
        if self.ema_decay == 0.0:
            return tf.constant(0.0)
        if not self.ema_warmup:
            return tf.constant(self.ema_decay)
        n = tf.cast(self.optimizer.iterations, tf.float32)
        return tf.minimum(self.ema_decay, (1.0 + n) / (10.0 + n))

    def _update_ema(self, decay):
        """average ← decay·average + (1 − decay)·value for each EMA weight, as one fused
        ``ResourceApplyGradientDescent`` a weight (average − (1 − decay)·(average − value),
        equal to float32 round-off): four graph ops a weight instead of ten. With
        ``ema_decay`` 0 the average is an exact copy.

        Args:
            decay: this step's decay, a scalar tensor (``_ema_decay_now``).
        """
        pairs = list(zip(self.ema_network.weights, self.network.weights))
        rate = 1.0 - decay

        def update(average, value):
            value = tf.cast(value, average.dtype)
            if self.ema_decay == 0.0:
                return average.assign(value)
            return tf.raw_ops.ResourceApplyGradientDescent(
                var=average.handle, alpha=tf.cast(rate, average.dtype), delta=average - value
            )

        context = tf.distribute.get_replica_context()
        if context is None or not tf.distribute.has_strategy():
            for average, value in pairs:
                update(average, value)
            return

        def merged(strategy):
            for average, value in pairs:
                strategy.extended.update(average.value, update, args=(value.value,))

        context.merge_call(merged)

    # ------------------------------------------------------------------ sampling

    def model_fn(self, ema=True, y=None, sampler=None, precision="float32"):
        """The callable the samplers take (ε-prediction or score), with the EMA weights
        by default.

        Args:
            ema: use ``ema_network`` (True) or the raw ``network``.
            precision: "float32" (the network as it is), or "bfloat16": a copy of it
                built under the ``mixed_bfloat16`` policy, holding its current weights
                (``inference_network``); the output is float32 either way.
            y: class labels [batch] for a class-conditional model.
            sampler: the sampler it is for (a learned-variance DDPM gives [ε, v] to
                samplers that use it — ``kdiff.samplers.registry.Sampler.learned_variance``, as
                "ddpm" — and ε alone to the others).

        Returns:
            ``fn(x, level)``.
        """
        network = self.inference_network(ema, precision)

        def network_fn(x, level):  # float32 out, also under a mixed-precision policy
            return tf.cast(self._call_network(network, x, level, y), x.dtype)

        return self._model_fn(network_fn, sampler)

    def inference_network(self, ema=True, precision="float32"):
        """The network sampling runs: ``ema_network`` (or ``network``), in ``precision``.

        For "bfloat16", a copy of the network built from its config under the
        ``mixed_bfloat16`` policy (float32 weights, bfloat16 arithmetic), made once per
        model and given the network's current weights on every call made outside a
        traced function — so it follows training (``kdiff.sample`` calls it before it runs
        its compiled loop; inside a trace the copy is used as last synced).

        Args:
            ema: the EMA network (True) or the raw one.
            precision: one of ``kdiff.samplers.draw.SAMPLING_PRECISIONS``.

        Returns:
            A Keras network.
        """
        from kdiff.samplers.draw import SAMPLING_PRECISIONS

        network = self.ema_network if ema else self.network
        if precision not in SAMPLING_PRECISIONS:
            raise ValueError(f"Expected `precision` in {list(SAMPLING_PRECISIONS)}. Received: precision={precision!r}")
        if precision == "float32" or network.dtype_policy.compute_dtype == precision:
            return network
        policy = f"mixed_{precision}"

        def build():
            twin = type(network).from_config(dict(network.get_config(), dtype=policy))
            x = tf.zeros((1,) + self.image_shape)
            y = tf.zeros([1], tf.int32) if self.num_classes is not None else None
            self._call_network(twin, x, self._dummy_level(), y)
            return twin

        twin = self._twins.get(("ema" if ema else "raw", policy), build)
        if not tf.inside_function():
            twin.set_weights(network.get_weights())
        return twin

    def sampling_spec(self):
        """What ``kdiff.sample`` needs: see ``kdiff.samplers.draw.SamplingSpec``."""

        def at_precision(precision):
            self.inference_network(True, precision)  # here, eagerly: the copy takes the current weights
            return lambda y=None, sampler=None: self.model_fn(ema=True, y=y, sampler=sampler, precision=precision)

        return SamplingSpec(
            make_model_fn=at_precision("float32"),
            at_precision=at_precision,
            process=self.process,
            image_shape=self.image_shape,
            data_range=self.data_range,
            default_sampler=self.default_sampler,
            sampler_defaults=self.sampler_defaults,
            num_classes=self.num_classes,
            null_label=self.null_label,
            draw_cache=self._draw_cache,
        )

    def _sampler_defaults(self):
        return {}

    def generate(self, num_samples, sampler=None, steps=None, seed=0, **kwargs):
        """Samples uint8 images with the EMA weights (``kdiff.sample`` on this model).

        Args:
            num_samples: how many images.
            sampler: a sampler name (default: the family's).
            steps: sampling steps (default: the sampler's).
            seed: same seed, same images.
            **kwargs: more ``kdiff.sample`` arguments (``batch_size``,
                ``return_trajectory``, ``class_labels``, ``x_T`` — the starting noise
                [num_samples, H, W, C] float32 —, sampler options).

        Returns:
            uint8 images [N, H, W, C] (and the trajectory when asked).
        """
        from kdiff.sampling import sample

        return sample(self, num_samples, sampler=sampler, steps=steps, seed=seed, **kwargs)

    def export(self, path, **kwargs):
        """Writes a TF Serving SavedModel with ``denoise`` and ``generate`` signatures and a
        ``config.json`` (see ``kdiff.export.export``); replaces Keras' ``Model.export``.

        Args:
            path: the directory to write.
            **kwargs: ``kdiff.export.export`` options (``sampler``, ``default_steps``,
                ``overwrite``, …).

        Returns:
            The absolute path written.
        """
        from kdiff.export import export

        return export(self, path, **kwargs)

    # ------------------------------------------------------------------ config

    def get_config(self):
        config = super().get_config()
        config.update(
            network=keras.saving.serialize_keras_object(self.network),
            image_shape=list(self.image_shape),
            num_classes=self.num_classes,
            label_dropout=self.label_dropout,
            ema_decay=self.ema_decay,
            ema_warmup=self.ema_warmup,
            seed=self.seed,
            data_range=list(self.data_range),
        )
        if self._own_default_sampler is not None:  # written only when set: native configs stay as they were
            config["default_sampler"] = self._own_default_sampler
        if self._own_sampler_defaults:
            config["sampler_defaults"] = request.merge_defaults(self._own_sampler_defaults)  # plain dicts
        return config

    @classmethod
    def from_config(cls, config):
        # A saved model names kdiff's networks (and, compiled, its optimizers): Keras must
        # know them, though `import kdiff` imports neither module.
        from kdiff import models, optim  # noqa: F401

        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        return cls(**config)

    def export_config(self):
        """The description ``kdiff.export`` writes to ``config.json``."""
        return {
            "family": self.family,
            self.process.kind: self.process.get_config(),
            "image_shape": list(self.image_shape),
            "data_range": list(self.data_range),
            "num_classes": self.num_classes,
            "null_label": self.null_label,
            "default_sampler": self.default_sampler,
            "sampler_defaults": self.sampler_defaults,
            "level": self.process.level_description if self._network_level is None else self._network_level,
        }


@keras.saving.register_keras_serializable(package="kdiff")
class DDPM(DiffusionModel):
    """Denoising diffusion probabilistic model (Ho et al. 2020; Improved DDPM's hybrid loss).

    The network predicts ε from (x_t, t) with integer timesteps t ∈ [0, T). DDIM samples
    the same trained model: the sampler is a sampling-time choice.

    Args:
        network: ``network(x, t)`` → ε (or [ε, v] with 2×C channels for ``loss="hybrid"``).
        schedule: a ``kdiff.schedules.Schedule`` (default: ``linear()``).
        loss: "simple" (eq. 24) or "hybrid" (eq. 25, learned variance).
        lambda_vlb: the hybrid loss's λ.
        **kwargs: ``DiffusionModel`` arguments.
    """

    _network_level = None

    def __init__(self, network, schedule=None, loss="simple", *, lambda_vlb=0.001, **kwargs):
        if isinstance(schedule, dict):
            schedule = schedules_lib.from_config(schedule)
        self.process = schedules_lib.linear() if schedule is None else schedule
        if not isinstance(self.process, schedules_lib.Schedule):
            raise ValueError(
                "Expected `schedule` to be a kdiff.schedules.Schedule for DDPM (an SDE belongs "
                f"to ScoreSDE, σ's to NCSN). Received: schedule={schedule!r}"
            )
        self.loss_name = checks.one_of(loss, "loss", ("simple", "hybrid"))
        self.lambda_vlb = checks.non_negative(lambda_vlb, "lambda_vlb")
        super().__init__(network, **kwargs)

    def _check_output(self, shape):
        channels = self.image_shape[2] * (2 if self.loss_name == "hybrid" else 1)
        expected = self.image_shape[:2] + (channels,)
        if shape != expected:
            raise ValueError(
                f"Expected the network to return [batch, *{list(expected)}] for "
                f"DDPM(loss={self.loss_name!r})"
                + (" (ε and v: build the network with learned variance)" if channels > self.image_shape[2] else "")
                + f". Received: output shape {[None, *shape]}"
            )

    def _loss(self, network_fn, x, seed):
        T = self.process.T
        t, noise = self._global_draws(
            x,
            lambda n: (
                tf.random.stateless_uniform([n], _random.fold_in(seed, 0), 0, T, tf.int32),
                self._normal(n, _random.fold_in(seed, 1)),
            ),
        )
        if self.loss_name == "hybrid":
            return losses.hybrid(network_fn, x, self.process, lambda_vlb=self.lambda_vlb, t=t, noise=noise)
        return losses.simple(network_fn, x, self.process, t=t, noise=noise)

    def _model_fn(self, network_fn, sampler=None):
        if self.loss_name == "hybrid" and not registry.uses_learned_variance(sampler):
            channels = self.image_shape[2]
            return lambda x, t: network_fn(x, t)[..., :channels]  # ε of [ε, v]
        return network_fn

    def _sampler_defaults(self):
        return registry.learned_variance_defaults() if self.loss_name == "hybrid" else {}

    def get_config(self):
        config = super().get_config()
        config.update(schedule=self.process.get_config(), loss=self.loss_name, lambda_vlb=self.lambda_vlb)
        return config


@keras.saving.register_keras_serializable(package="kdiff")
class NCSN(DiffusionModel):
    """Noise-conditional score network (Song & Ermon 2019).

    The network takes (x̃, i) with i the index of the noise level σ_i and returns the
    score ∇log p_σ(x̃) (NCSNv2's ``scale_by_sigma`` divides the output by σ instead).
    Data lives in [0, 1] by default, as in NCSN.

    Args:
        network: ``network(x, label)`` with int labels [batch] in [0, L).
        sigmas: descending noise levels (default: ``geometric_sigmas(1, 0.01, 10)``).
        loss: "dsm" (eqs. 32–33) or "ssm" (sliced score matching, eq. 42).
        scale_by_sigma: score = network output / σ.
        **kwargs: ``DiffusionModel`` arguments (``data_range`` defaults to (0, 1)).
    """

    _network_level = "noise level index i into sigmas"

    def __init__(self, network, sigmas=None, loss="dsm", *, scale_by_sigma=False, **kwargs):
        sigmas = schedules_lib.geometric_sigmas() if sigmas is None else sigmas
        if isinstance(sigmas, (schedules_lib.Schedule, sde_lib.SDE)):
            raise ValueError(
                "Expected descending noise levels `sigmas` for NCSN (a schedule belongs to DDPM, "
                f"an SDE to ScoreSDE). Received: sigmas={sigmas!r}"
            )
        self.process = schedules_lib.Sigmas(sigmas)
        self.loss_name = checks.one_of(loss, "loss", ("dsm", "ssm"))
        self.scale_by_sigma = bool(scale_by_sigma)
        levels = getattr(network, "num_classes", None)
        if levels is not None and levels != len(self.process) and kwargs.get("num_classes") is None:
            raise ValueError(
                f"Expected `sigmas` with one level per network class ({levels}). "
                f"Received: {len(self.process)} sigmas"
            )
        super().__init__(network, **kwargs)

    def _null_label(self, network):
        return None  # the network's classes are the noise levels

    def labels_for(self, sigma):
        """The index of the nearest noise level (in log space) for each σ in ``sigma``."""
        log_sigmas = tf.constant(np.log(self.process), tf.float32)
        distance = tf.abs(tf.math.log(tf.cast(sigma, tf.float32))[:, None] - log_sigmas[None, :])
        return tf.cast(tf.argmin(distance, axis=1), tf.int32)

    def _score(self, network_fn):
        def score_fn(x, sigma):
            out = tf.cast(network_fn(x, self.labels_for(sigma)), x.dtype)
            if self.scale_by_sigma:
                out = out / tf.reshape(tf.cast(sigma, x.dtype), [-1, 1, 1, 1])
            return out

        return score_fn

    def _loss(self, network_fn, x, seed):
        L = len(self.process)
        labels, noise = self._global_draws(
            x,
            lambda n: (
                tf.random.stateless_uniform([n], _random.fold_in(seed, 0), 0, L, tf.int32),
                self._normal(n, _random.fold_in(seed, 1)),
            ),
        )
        score_fn = self._score(network_fn)
        if self.loss_name == "ssm":
            return losses.sliced_score_matching(
                score_fn, x, sigmas=self.process, labels=labels, seed=_random.fold_in(seed, 2)
            )
        return losses.dsm(score_fn, x, self.process, labels=labels, noise=noise)

    def _model_fn(self, network_fn, sampler=None):
        return self._score(network_fn)

    def _dummy_level(self):
        return tf.zeros([1], tf.int32)

    def get_config(self):
        config = super().get_config()
        config.update(sigmas=[float(s) for s in self.process], loss=self.loss_name, scale_by_sigma=self.scale_by_sigma)
        return config


CONDITIONINGS = ("time", "sigma")
_LEVELS = {
    "time": "continuous time t in (0, 1], fed to the network as t*(N-1)",
    "sigma": "continuous time t in (0, 1], fed to the network as sigma(t), the marginal std; "
             "the network returns the score",
}


@keras.saving.register_keras_serializable(package="kdiff")
class ScoreSDE(DiffusionModel):
    """Score-based generative model through an SDE (Song et al. 2021).

    How the network is conditioned is a property of the network–process pair, named by
    ``conditioning`` (score_sde's two conventions):

    * ``"time"`` — the network sees the continuous time scaled to [0, N−1] (as score_sde's
      DDPM-style models do) and predicts the normalized noise; the score is
      −output / std(t), which is score_sde's ``scale_by_sigma`` for VE and its
      ε-parameterization for VP. The default for networks that do not say otherwise
      (kdiff's ``UNet``).
    * ``"sigma"`` — the network sees σ(t), the marginal standard deviation of the SDE at t
      (for a VE SDE, σ_min (σ_max/σ_min)^t), and returns the score itself (score_sde's
      NCSN++ with Fourier features of log σ and its output divided by σ; diffusers'
      ``ScoreSdeVePipeline``).

    Training, sampling, likelihoods and the export all go through the same score function,
    so the convention holds everywhere; ``get_config`` records it.

    Args:
        network: ``network(x, level)`` → noise estimate (``"time"``) or score
            (``"sigma"``) shaped like x.
        sde: a ``kdiff.sde.SDE`` (default: ``VPSDE()``).
        eps: the smallest training time.
        likelihood_weighting: λ(t) = g(t)² (score_sde's likelihood weighting).
        conditioning: "time" or "sigma"; None takes the network's own ``conditioning``
            attribute (``kdiff.models.NCSNpp`` says "sigma" with Fourier features) and
            "time" when it has none.
        **kwargs: ``DiffusionModel`` arguments.
    """

    def __init__(self, network, sde=None, *, eps=1e-5, likelihood_weighting=False,
                 conditioning=None, **kwargs):
        if isinstance(sde, dict):
            sde = sde_lib.from_config(sde)
        self.process = sde_lib.VPSDE() if sde is None else sde
        if not isinstance(self.process, sde_lib.SDE):
            raise ValueError(
                "Expected `sde` to be a kdiff.sde.SDE for ScoreSDE (a schedule belongs to "
                f"DDPM, σ's to NCSN). Received: sde={sde!r}"
            )
        self.eps = checks.positive(eps, "eps")
        self.likelihood_weighting = bool(likelihood_weighting)
        if conditioning is None:
            conditioning = getattr(network, "conditioning", "time")
        self.conditioning = checks.one_of(conditioning, "conditioning", CONDITIONINGS)
        super().__init__(network, **kwargs)

    @property
    def _network_level(self):
        return _LEVELS[self.conditioning]

    def _dummy_level(self):
        return tf.ones([1], tf.float32) if self.conditioning == "sigma" else tf.zeros([1], tf.float32)

    def _score(self, network_fn):
        sde = self.process

        if self.conditioning == "sigma":
            def score_fn(x, t):
                _, std = sde.marginal_prob(x, t)
                return tf.cast(network_fn(x, tf.cast(std, tf.float32)), x.dtype)

            return score_fn

        def score_fn(x, t):
            out = tf.cast(network_fn(x, tf.cast(t, tf.float32) * (sde.N - 1)), x.dtype)
            _, std = sde.marginal_prob(x, t)
            return -out / tf.reshape(tf.cast(std, x.dtype), [-1, 1, 1, 1])

        return score_fn

    def _loss(self, network_fn, x, seed):
        T = self.process.T
        t, noise = self._global_draws(
            x,
            lambda n: (
                tf.random.stateless_uniform([n], _random.fold_in(seed, 0), self.eps, T),
                self._normal(n, _random.fold_in(seed, 1)),
            ),
        )
        return losses.sde_dsm(
            self._score(network_fn), x, self.process, eps=self.eps,
            likelihood_weighting=self.likelihood_weighting, t=t, noise=noise,
        )

    def _model_fn(self, network_fn, sampler=None):
        return self._score(network_fn)

    def get_config(self):
        config = super().get_config()
        config.update(sde=self.process.get_config(), eps=self.eps,
                      likelihood_weighting=self.likelihood_weighting, conditioning=self.conditioning)
        return config
