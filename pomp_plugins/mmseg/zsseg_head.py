"""ZSSeg's decode head on mmseg's MaskFormer: mask proposals classified against class text embeddings.

Everything MaskFormer is mmseg's ``MaskFormerHead`` (built on mmdet): the pixel decoder, the DETR transformer decoder,
the sine positions, the Hungarian assigner and its match costs, and the class / mask / dice losses all come from the
config (``_base_/models/zsseg_r101c.py`` sets ZSSeg's values). What is ZSSeg's, and ours, is the classifier in place
of MaskFormer's ``Linear(feat, C + 1)``: each decoder query goes through ZSSeg's class-embedding MLP into CLIP's
text space, and its logits are ``temperature * cos`` against the class text embeddings (a POMP prompt, a hard prompt
or a template ensemble), plus a learned void embedding. Classes unseen in a zero-shot split are left out of every
softmax in training. At test time ZSSeg's optional CLIP stage re-classifies each proposal's region.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.logging import print_log
from mmseg.models.decode_heads.maskformer_head import MaskFormerHead
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import ConfigType, SampleList
from torch import nn

from pomp_plugins.prompt import VocabularyError, cosine_logits, load_for_prompt

from .classifier import VocabularyClassifier
from .clip_stage import CLIPProposalClassifier
from .vocabulary import ClassesSpec, SplitSpec, load_split

TEXT_SOURCES = ("prompt", "hard_prompt", "templates", "embedding_file")


class MLP(nn.Sequential):
    """``num_layers`` Linear layers with ReLU in between (DETR's / ZSSeg's ``MLP``)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers += [nn.Linear(a, b)] + ([nn.ReLU(inplace=True)] if i < num_layers - 1 else [])
        super().__init__(*layers)


class QueryTextClassifier(nn.Module):
    """Decoder query features ``[..., feat]`` -> class logits ``[..., C + 1]`` (void last).

    ``embed`` is ZSSeg's class-embedding MLP (``feat -> hidden -> D``); the class logits are the text classifier's
    ``temperature * cos(embedding, text embedding)`` (``-inf`` for untrained classes in training mode) and the void
    logit is ``temperature * cos(embedding, void_embedding)`` with a learned void embedding, as ZSSeg's
    ``non_object_embedding`` (initialised N(0, D^-0.5); ZSSeg uses the text width^-0.5, the same for ViT-B/16).
    """

    def __init__(self, in_channels: int, text: VocabularyClassifier, hidden_channels: int = 1024, num_layers: int = 2):
        super().__init__()
        self.embed = MLP(in_channels, hidden_channels, text.dim, num_layers)
        self.text = text
        self.void_embedding = nn.Parameter(torch.randn(text.dim) * text.dim**-0.5)

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        embeddings = self.embed(queries)
        void = cosine_logits(embeddings, F.normalize(self.void_embedding, dim=0)[None], self.text.temperature)
        return torch.cat((self.text(embeddings), void), dim=-1)


@MODELS.register_module()
class ZSSegHead(MaskFormerHead):
    """ZSSeg: mmseg's ``MaskFormerHead`` with a text-embedding classifier and ZSSeg's CLIP stage.

    Args:
        in_channels: channels of the backbone levels it reads (finest first), e.g. ``[256, 512, 1024, 2048]``.
        text_classifier: ``dict(classes=..., split=..., prompt=... | hard_prompt=... | templates=... |
            embedding_file=..., clip_model=..., clip_pretrained=..., temperature=100.0)``, see
            :class:`VocabularyClassifier`.
        class_embed: ZSSeg's class-embedding MLP, ``dict(hidden_channels=1024, num_layers=2)``.
        no_object_weight: the class-loss weight of void (ZSSeg's ``NO_OBJECT_WEIGHT``); the head writes
            ``loss_cls.class_weight = [1] * C + [no_object_weight]`` for its vocabulary, so configs leave it unset.
        clip_stage: ``dict(weight=0.8, mask_threshold=0.5, temperature=100.0)`` for ZSSeg's CLIP region
            classification at test time (needs ``ZSSegEncoderDecoder``), optionally with ``text=dict(prompt=... |
            hard_prompt=... | templates=...)``: a second prompt for the regions (ZSSeg's separate adapter; without it
            the regions are scored against the head's class embeddings), and ``split=``: the seen classes of the
            ensemble when they differ from the trained ones (ZSSeg weighs the COCO-Stuff test classes by the 156/15
            split even for a model trained on all 171). ``None``: the head alone.
        in_index: which backbone levels to read (default: all, in order).
        feat_channels, out_channels, num_queries, pixel_decoder, transformer_decoder, positional_encoding,
        enforce_decoder_input_project, loss_cls, loss_mask, loss_dice, train_cfg, align_corners, ignore_index,
        init_cfg: as mmseg's ``MaskFormerHead`` (``train_cfg``: the assigner with its match costs, and the sampler).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        text_classifier: dict | None = None,
        class_embed: dict | None = None,
        no_object_weight: float = 0.1,
        clip_stage: dict | None = None,
        in_index: Sequence[int] | None = None,
        loss_cls: ConfigType = None,
        **kwargs,
    ):
        if loss_cls is None:
            loss_cls = dict(type="mmdet.CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)
        if not text_classifier:
            raise ValueError(
                "ZSSegHead needs text_classifier=dict(classes=..., prompt=... | hard_prompt=... | "
                "templates=... | embedding_file=...)"
            )
        if loss_cls.get("class_weight") is not None:
            raise ValueError(
                "ZSSegHead sets loss_cls.class_weight itself from no_object_weight (the vocabulary "
                "decides the number of classes): remove class_weight from loss_cls"
            )
        classifier = VocabularyClassifier(**text_classifier)
        in_channels = list(in_channels)
        levels = list(range(len(in_channels))) if in_index is None else [int(i) for i in in_index]
        if len(levels) != len(in_channels):
            raise ValueError(
                f"ZSSegHead: in_index {levels} selects {len(levels)} levels but in_channels lists {len(in_channels)}"
            )
        loss_cls = ConfigDict(loss_cls, class_weight=self._class_weight(classifier.num_classes, no_object_weight))
        super().__init__(num_classes=classifier.num_classes, in_channels=in_channels, loss_cls=loss_cls, **kwargs)
        self.in_index = levels
        self.no_object_weight = no_object_weight
        self.cls_embed = QueryTextClassifier(kwargs["feat_channels"], classifier, **(class_embed or {}))
        self.ensemble_split = None
        self.clip_stage, self.clip_text = self._build_clip_stage(clip_stage) if clip_stage else (None, None)

    @staticmethod
    def _class_weight(num_classes: int, no_object_weight: float) -> list[float]:
        return [1.0] * num_classes + [float(no_object_weight)]

    @property
    def classifier(self) -> VocabularyClassifier:
        """The text classifier of the queries (classes, split, class embeddings)."""
        return self.cls_embed.text

    def _build_clip_stage(self, clip_stage: dict) -> tuple[CLIPProposalClassifier, VocabularyClassifier | None]:
        clip_stage = dict(clip_stage)
        text = clip_stage.pop("text", None)
        split = clip_stage.pop("split", None)
        self.ensemble_split = load_split(split) if split is not None else None
        if self.ensemble_split is not None:
            self.ensemble_split.masks(self.classifier.vocabulary)  # a class missing from the vocabulary fails here
        source = self.classifier.text_source
        if text is not None:
            if not any(text.get(k) is not None for k in TEXT_SOURCES):
                raise ValueError(f"clip_stage.text needs one of {', '.join(TEXT_SOURCES[:3])}")
            text_source = {
                **{k: None for k in TEXT_SOURCES},
                "clip_model": source["clip_model"],
                "clip_pretrained": source["clip_pretrained"],
                **text,
            }
            clip_text = VocabularyClassifier(self.classifier.vocabulary, self.classifier.split, **text_source)
            source = clip_text.text_source
        else:
            clip_text = None
        if source["embedding_file"] and not source["clip_model"]:
            raise ValueError(
                "clip_stage with an embedding_file needs text_classifier.clip_model: the CLIP whose "
                "text tower made the embeddings"
            )
        clip, _ = load_for_prompt(source["prompt"], source["clip_model"], source["clip_pretrained"])
        stage = CLIPProposalClassifier(clip, **clip_stage)
        if stage.embed_dim != self.classifier.dim:
            raise ValueError(
                f"clip_stage: CLIP {clip.name} embeds images in {stage.embed_dim} dimensions, the "
                f"class embeddings have {self.classifier.dim}"
            )
        return stage, clip_text

    def set_vocabulary(self, classes: ClassesSpec, split: SplitSpec | None = None) -> None:
        """Score ``classes`` from now on (the head's and the CLIP stage's embeddings, and the class weights)."""
        self.classifier.set_vocabulary(classes, split)
        if self.clip_text is not None:
            self.clip_text.set_vocabulary(self.classifier.vocabulary, self.classifier.split)
        if self.ensemble_split is not None:
            try:
                self.ensemble_split.masks(self.classifier.vocabulary)
            except VocabularyError:
                print_log(
                    f"ZSSegHead: the CLIP ensemble's split {self.ensemble_split.name!r} does not fit the new "
                    "vocabulary; the ensemble now follows the text classifier's split",
                    logger="current",
                )
                self.ensemble_split = None
        self.num_classes = self.out_channels = self.classifier.num_classes
        self.class_weight = self._class_weight(self.num_classes, self.no_object_weight)
        self.loss_cls.class_weight = self.class_weight

    @property
    def ensemble_seen(self) -> torch.Tensor:
        """``[C]`` bool: the classes the CLIP ensemble treats as seen (the stage's ``split``, else the trained ones
        of the text classifier's split; none without a split)."""
        if self.ensemble_split is None:
            return self.classifier.seen
        return self.ensemble_split.masks(self.classifier.vocabulary)[0].to(self.classifier.seen.device)

    def forward(
        self, x: Sequence[torch.Tensor], batch_data_samples: SampleList | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone levels -> ``class_logits`` ``[L, B, Q, C + 1]`` (void last) and ``mask_logits``
        ``[L, B, Q, H/4, W/4]`` for the ``L`` decoder layers.

        The decoder attends over the whole (padded) feature map with no padding mask, as MaskFormer's predictor does
        in ZSSeg (mmseg's head masks by each image's ``img_shape``).
        """
        x = [x[i] for i in self.in_index]
        size = tuple(x[-1].shape[-2:])
        whole = [SegDataSample(metainfo=dict(batch_input_shape=size, img_shape=size)) for _ in range(len(x[0]))]
        return super().forward(x, whole)

    def loss(self, x: Sequence[torch.Tensor], batch_data_samples: SampleList, train_cfg: ConfigType) -> dict:
        """mmseg's MaskFormer losses (``loss_cls``, ``loss_mask``, ``loss_dice`` and ``d{i}.*`` per decoder layer).

        Every class present becomes one target mask at the input resolution; ignored pixels (``ignore_index``:
        unseen classes and padding) are 0 in every target mask, i.e. negatives, as in ZSSeg.
        """
        self._check_no_untrained_targets(batch_data_samples)
        return super().loss(x, batch_data_samples, train_cfg)

    def _check_no_untrained_targets(self, batch_data_samples: SampleList) -> None:
        labels = torch.cat([s.gt_sem_seg.data.flatten() for s in batch_data_samples]).unique()
        labels = labels[labels != self.ignore_index]
        trained = self.classifier.trained
        bad = [int(i) for i in labels.tolist() if i >= len(trained) or i < 0 or not bool(trained[i])]
        if bad:
            keys = self.classifier.vocabulary.keys
            names = [keys[i] if 0 <= i < len(keys) else i for i in bad]
            raise ValueError(
                f"training targets contain classes {names} that are not trained on (unseen in the split "
                "or outside the vocabulary): add dict(type='IgnoreUnseenClasses', split=...) after "
                "LoadAnnotations in the train pipeline"
            )

    def semantic_probs(
        self, class_logits: torch.Tensor, mask_logits: torch.Tensor, images: torch.Tensor | None = None
    ) -> torch.Tensor:
        """MaskFormer's semantic inference, ``sum_q p(c | q) * sigmoid(mask_q)`` ``[B, C, h, w]``, with ``p(c | q)``
        the softmax over classes and void with void dropped; with a ``clip_stage``, ``p(c | q)`` is first ensembled
        with CLIP's probabilities of each proposal's region (ZSSeg).

        ``class_logits`` ``[B, Q, C + 1]``, ``mask_logits`` ``[B, Q, h, w]`` at the images' resolution, ``images``
        ``[B, 3, h, w]`` RGB 0..255.
        """
        probs = class_logits.float().softmax(-1)[..., :-1]
        masks = mask_logits.float().sigmoid()
        if self.clip_stage is not None:
            if images is None:
                raise ValueError(
                    "ZSSegHead's clip_stage needs the input images: use type='ZSSegEncoderDecoder' as the segmentor"
                )
            text = self.clip_text if self.clip_text is not None else self.classifier
            seen = self.ensemble_seen
            probs = torch.stack(
                [
                    self.clip_stage.ensemble(p, image, m, text.class_embeddings, seen)
                    for p, image, m in zip(probs, images, masks)
                ]
            )
        return torch.einsum("bqc,bqhw->bchw", probs, masks)

    def predict(
        self,
        x: Sequence[torch.Tensor],
        batch_img_metas: list[dict],
        test_cfg: ConfigType,
        images: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Class scores ``[B, C, H, W]`` at ``img_shape`` (mmseg takes the argmax).

        ``images``: the network's input ``[B, 3, H', W']`` as RGB 0..255 (``ZSSegEncoderDecoder`` passes it). With
        them, the masks are upsampled to the input and cropped to ``img_shape`` as ZSSeg does (which differs from
        resizing only when the input is padded); without, resized to ``img_shape`` as mmseg's MaskFormer does.
        """
        class_logits, mask_logits = self(x)
        height, width = batch_img_metas[0]["img_shape"][:2]
        size = tuple(images.shape[-2:]) if images is not None else (height, width)
        mask_logits = F.interpolate(mask_logits[-1], size=size, mode="bilinear", align_corners=False)
        if images is not None:
            images, mask_logits = images[..., :height, :width], mask_logits[..., :height, :width]
        return self.semantic_probs(class_logits[-1], mask_logits, images)
