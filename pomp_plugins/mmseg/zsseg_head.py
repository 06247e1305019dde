"""ZSSeg-style decode head: MaskFormer mask proposals classified against class text embeddings.

Pixel decoder (mmseg's FPN neck) over the backbone features -> per-pixel mask embeddings at the finest level;
a DETR decoder with Q learned queries over the coarsest level; each query gives a mask (dot product of its mask
embedding with the pixel embeddings) and a class embedding, whose logits are ``temperature * cos`` against the
class text embeddings plus a learned void embedding. Trained with MaskFormer's set loss on seen classes only;
semantic inference sums each query's mask probability weighted by its class probabilities.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, SampleList
from torch import nn

from pomp_plugins.prompt import load_for_prompt

from .classifier import VocabularyClassifier
from .clip_stage import CLIPProposalClassifier
from .criterion import MaskSetCriterion
from .query_decoder import QueryDecoder


class MLP(nn.Sequential):
    """``num_layers`` Linear layers with ReLU in between (DETR's box/mask-embedding MLP)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers += [nn.Linear(a, b)] + ([nn.ReLU(inplace=True)] if i < num_layers - 1 else [])
        super().__init__(*layers)


@MODELS.register_module()
class ZSSegHead(BaseDecodeHead):
    """Mask-proposal head with text-embedding classification (ZSSeg).

    Args:
        in_channels: channels of the backbone levels it reads (finest first), e.g. ``[256, 512, 1024, 2048]``.
        channels: width of the pixel decoder, the mask embeddings and the transformer.
        text_classifier: ``dict(classes=..., split=..., prompt=... | hard_prompt=... | embedding_file=...,
            clip_model=..., clip_pretrained=..., temperature=...)``, see :class:`VocabularyClassifier`.
        num_queries, num_decoder_layers, num_heads, feedforward_channels, decoder_dropout: transformer sizes.
        class_weight, mask_weight, dice_weight, void_weight: MaskFormer's loss weights (also the matching costs).
        deep_supervision: also apply the loss to every intermediate decoder layer.
        clip_stage: ``dict(weight=0.8, mask_threshold=0.5)`` to add ZSSeg's CLIP region classification at test
            time (needs ``ZSSegEncoderDecoder``, which hands the images to the head), or ``None``.
        Other keyword arguments go to ``BaseDecodeHead`` (``norm_cfg``, ``align_corners``, ``ignore_index``...).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int = 256,
        text_classifier: Optional[dict] = None,
        num_queries: int = 100,
        num_decoder_layers: int = 6,
        num_heads: int = 8,
        feedforward_channels: int = 2048,
        decoder_dropout: float = 0.1,
        class_weight: float = 1.0,
        mask_weight: float = 20.0,
        dice_weight: float = 1.0,
        void_weight: float = 0.1,
        deep_supervision: bool = True,
        clip_stage: Optional[dict] = None,
        norm_cfg: ConfigType = dict(type="GN", num_groups=32, requires_grad=True),
        init_cfg=None,
        **kwargs,
    ):
        if not text_classifier:
            raise ValueError("ZSSegHead needs text_classifier=dict(classes=..., prompt=... | hard_prompt=... | "
                             "embedding_file=...)")
        classifier = VocabularyClassifier(**text_classifier)
        in_channels = list(in_channels)
        super().__init__(in_channels, channels, num_classes=classifier.num_classes,
                         input_transform="multiple_select", in_index=list(range(len(in_channels))),
                         dropout_ratio=0, norm_cfg=norm_cfg, init_cfg=init_cfg, **kwargs)
        del self.conv_seg  # classification is against text embeddings
        self.classifier = classifier
        self.pixel_decoder = MODELS.build(dict(type="FPN", in_channels=in_channels, out_channels=channels,
                                               num_outs=len(in_channels), norm_cfg=norm_cfg))
        self.mask_features = ConvModule(channels, channels, 3, padding=1, norm_cfg=norm_cfg)
        self.decoder = QueryDecoder(channels, num_queries, num_decoder_layers, num_heads, feedforward_channels,
                                    decoder_dropout)
        self.mask_embed = MLP(channels, channels, channels, 3)
        self.class_embed = nn.Linear(channels, classifier.dim)
        self.void_embedding = nn.Parameter(torch.randn(classifier.dim) * classifier.dim ** -0.5)
        self.criterion = MaskSetCriterion(class_weight, mask_weight, dice_weight, void_weight, self.ignore_index)
        self.deep_supervision = deep_supervision
        self.clip_stage = self._build_clip_stage(clip_stage) if clip_stage else None

    def _build_clip_stage(self, clip_stage: dict) -> CLIPProposalClassifier:
        source = self.classifier.text_source
        if source["embedding_file"] and not source["clip_model"]:
            raise ValueError("clip_stage with an embedding_file needs text_classifier.clip_model: the CLIP whose "
                             "text tower made the embeddings")
        clip, _ = load_for_prompt(source["prompt"], source["clip_model"], source["clip_pretrained"])
        stage = CLIPProposalClassifier(clip, **clip_stage)
        if stage.embed_dim != self.classifier.dim:
            raise ValueError(f"clip_stage: CLIP {clip.name} embeds images in {stage.embed_dim} dimensions, the "
                             f"class embeddings have {self.classifier.dim}")
        return stage

    def forward(self, inputs: List[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone levels -> ``class_logits`` ``[L, B, Q, C + 1]`` (void last) and ``mask_logits``
        ``[L, B, Q, H/4, W/4]`` for the ``L`` decoder layers (only the last one unless deep supervision trains)."""
        levels = self.pixel_decoder(self._transform_inputs(inputs))
        pixels = self.mask_features(levels[0])
        queries = self.decoder(levels[-1])
        if not (self.training and self.deep_supervision):
            queries = queries[-1:]
        mask_logits = torch.einsum("lbqc,bchw->lbqhw", self.mask_embed(queries), pixels)
        embeddings = self.class_embed(queries)
        void = self.classifier.temperature * F.normalize(embeddings, dim=-1) @ F.normalize(self.void_embedding, dim=0)
        class_logits = torch.cat((self.classifier(embeddings), void[..., None]), dim=-1)
        return class_logits, mask_logits

    def loss(self, inputs: List[torch.Tensor], batch_data_samples: SampleList, train_cfg: ConfigType) -> dict:
        class_logits, mask_logits = self.forward(inputs)
        labels = self._stack_batch_gt(batch_data_samples).float()
        labels = F.interpolate(labels, size=mask_logits.shape[-2:], mode="nearest").squeeze(1).long()
        self._check_no_untrained_targets(labels)
        losses = {}
        for layer in range(len(class_logits)):
            prefix = "" if layer == len(class_logits) - 1 else f"d{layer}."
            for name, value in self.criterion(class_logits[layer], mask_logits[layer], labels).items():
                losses[prefix + name] = value
        return losses

    def _check_no_untrained_targets(self, labels: torch.Tensor) -> None:
        present = labels.unique()
        present = present[present != self.ignore_index]
        if len(present) and (present.max() >= self.num_classes or not bool(self.classifier.trained[present].all())):
            keys = self.classifier.vocabulary.keys
            bad = [keys[i] if i < len(keys) else int(i) for i in present.tolist()
                   if i >= len(keys) or not bool(self.classifier.trained[i])]
            raise ValueError(f"training targets contain classes {bad} that are not trained on (unseen in the split "
                             "or outside the vocabulary): add dict(type='IgnoreUnseenClasses', split=...) after "
                             "LoadAnnotations in the train pipeline")

    def semantic_probs(self, class_logits: torch.Tensor, mask_logits: torch.Tensor,
                       images: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per-class scores ``[B, C, h, w]``: ``sum_q p(c | q) * sigmoid(mask_q)``, with ``p(c | q)`` the softmax
        without void, ensembled with CLIP's region probabilities when there is a ``clip_stage``.

        ``class_logits`` ``[B, Q, C + 1]``, ``mask_logits`` ``[B, Q, h, w]``, ``images`` ``[B, 3, H, W]`` RGB 0..255.
        """
        probs = class_logits.float().softmax(-1)[..., :-1]
        if self.clip_stage is not None:
            if images is None:
                raise ValueError("ZSSegHead's clip_stage needs the input images: use type='ZSSegEncoderDecoder' "
                                 "as the segmentor")
            probs = torch.stack([
                self.clip_stage.ensemble(p, image, masks, self.classifier.class_embeddings, self.classifier.seen)
                for p, image, masks in zip(probs, images, mask_logits)
            ])
        return torch.einsum("bqc,bqhw->bchw", probs, mask_logits.float().sigmoid())

    def predict(self, inputs: List[torch.Tensor], batch_img_metas: List[dict], test_cfg: ConfigType,
                images: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Class scores ``[B, C, H, W]`` at the padded input size (mmseg takes the argmax)."""
        class_logits, mask_logits = self.forward(inputs)
        return self.predict_by_feat(self.semantic_probs(class_logits[-1], mask_logits[-1], images), batch_img_metas)
