# ZSSeg (MendelXu/zsseg.baseline, "zero_shot_maskformer_R101c") on mmseg's MaskFormer, with a POMP prompt.
# Backbone "R101c": detectron2's DeepLab ResNet-101 as mmseg's ResNetV1c, key by key:
#   STEM_TYPE deeplab, STEM_OUT_CHANNELS 128 -> deep stem 3x3 convs 3-64 (stride 2), 64-64, 64-128: stem_channels=128
#   STRIDE_IN_1X1 False                      -> stride in the 3x3 conv: style='pytorch'
#   RES5_MULTI_GRID [1, 2, 4], RES5_DILATION 1 -> res5 keeps stride 2, its blocks dilate 1, 2, 4: multi_grid=(1, 2, 4)
#   NORM FrozenBN (detectron2's default), FREEZE_AT 0 -> every conv trains, BN statistics and affine frozen:
#       norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True, frozen_stages=-1
#   shortcut 1x1 conv with the block's stride -> avg_down=False (ResNetV1c's default)
# Weights: ZSSeg starts from detectron2's DeepLab/R-103.pkl (ImageNet); convert it to these keys or set
# model.pretrained / backbone.init_cfg to your own ResNetV1c-101 with a 128-channel stem.
# Head: MaskFormer's (MODEL.MASK_FORMER defaults, which ZSSeg keeps) with ZSSeg's text classifier.
# Top-level configs set model.decode_head.text_classifier (classes, split, prompt) and the CLIP stage's weights.
data_preprocessor = dict(
    type="SegDataPreProcessor",
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size_divisor=32,
)
model = dict(
    type="ZSSegEncoderDecoder",
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type="ResNetV1c",
        depth=101,
        stem_channels=128,
        base_channels=64,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        strides=(1, 2, 2, 2),
        dilations=(1, 1, 1, 1),
        multi_grid=(1, 2, 4),
        norm_cfg=dict(type="BN", requires_grad=False),
        norm_eval=True,
        frozen_stages=-1,
        style="pytorch",
        contract_dilation=True,
    ),
    decode_head=dict(
        type="ZSSegHead",
        in_channels=[256, 512, 1024, 2048],
        in_index=[0, 1, 2, 3],
        feat_channels=256,  # SEM_SEG_HEAD.CONVS_DIM, MASK_FORMER.HIDDEN_DIM
        out_channels=256,  # SEM_SEG_HEAD.MASK_DIM
        num_queries=100,
        # MaskFormer's BasePixelDecoder: FPN with 3x3 conv + GN + ReLU per level, plain 3x3 conv for the mask
        # features; the decoder's memory is input_proj(res5) (a 1x1 conv, added since 2048 != 256)
        pixel_decoder=dict(
            type="mmdet.PixelDecoder", norm_cfg=dict(type="GN", num_groups=32), act_cfg=dict(type="ReLU")
        ),
        enforce_decoder_input_project=False,
        positional_encoding=dict(num_feats=128, normalize=True),
        # 6 post-norm DETR decoder layers, 8 heads, FFN 2048, dropout 0.1; every layer's output goes through the final
        # LayerNorm and is supervised (DEEP_SUPERVISION)
        transformer_decoder=dict(
            return_intermediate=True,
            num_layers=6,
            layer_cfg=dict(
                self_attn_cfg=dict(
                    embed_dims=256, num_heads=8, attn_drop=0.1, proj_drop=0.1, dropout_layer=None, batch_first=True
                ),
                cross_attn_cfg=dict(
                    embed_dims=256, num_heads=8, attn_drop=0.1, proj_drop=0.1, dropout_layer=None, batch_first=True
                ),
                ffn_cfg=dict(
                    embed_dims=256,
                    feedforward_channels=2048,
                    num_fcs=2,
                    act_cfg=dict(type="ReLU", inplace=True),
                    ffn_drop=0.1,
                    dropout_layer=None,
                    add_identity=True,
                ),
            ),
            init_cfg=None,
        ),
        # ZSSeg's class embedding: MLP 256 -> 1024 -> 512 (EMBED_HIDDEN_DIM, EMBED_LAYERS 2, EMBEDDING_DIM)
        class_embed=dict(hidden_channels=1024, num_layers=2),
        # losses (SetCriterion): CE with no-object weight 0.1, sigmoid focal (alpha 0.25, gamma 2) x 20 and
        # dice (+1 smoothing) x 1 on the matched masks, normalised by the number of masks averaged over GPUs
        no_object_weight=0.1,
        loss_cls=dict(type="mmdet.CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0, reduction="mean"),
        loss_mask=dict(
            type="mmdet.FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, reduction="mean", loss_weight=20.0
        ),
        loss_dice=dict(
            type="mmdet.DiceLoss",
            use_sigmoid=True,
            activate=True,
            reduction="mean",
            naive_dice=True,
            eps=1.0,
            loss_weight=1.0,
        ),
        # HungarianMatcher: cost_class 1 (-p), cost_mask 20 (focal), cost_dice 1
        train_cfg=dict(
            assigner=dict(
                type="mmdet.HungarianAssigner",
                match_costs=[
                    dict(type="mmdet.ClassificationCost", weight=1.0),
                    dict(type="mmdet.FocalLossCost", weight=20.0, binary_input=True),
                    dict(type="mmdet.DiceCost", weight=1.0, pred_act=True, eps=1.0),
                ],
            ),
            sampler=dict(type="mmdet.MaskPseudoSampler"),
        ),
        align_corners=False,
        ignore_index=255,
        # CLIP region classification at test time (ZSSeg's second stage); None to use the head alone
        clip_stage=dict(weight=0.8, mask_threshold=0.5, temperature=100.0),
        text_classifier=dict(
            classes=None,  # set by each config
            split=None,
            prompt="prompts/pomp_vit_b16_ctx16.pt",  # a POMP prompt file (see the README: Prompt files)
            clip_model="ViT-B-16",
            clip_pretrained="auto",
            temperature=100.0,
        ),
    ),  # ZSSeg's cosine logit scale
    train_cfg=dict(),
    test_cfg=dict(mode="whole"),
)
