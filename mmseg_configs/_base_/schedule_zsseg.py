# ZSSeg's optimisation (train_net.py build_optimizer, SOLVER of its configs): AdamW lr 1e-4, weight decay 1e-4 except
# 0 on normalisation layers (WEIGHT_DECAY_NORM 0) and on the query embedding (WEIGHT_DECAY_EMBED 0, nn.Embedding),
# backbone lr x 0.1 (BACKBONE_MULTIPLIER), full-model gradient clipping at L2 norm 0.01, poly decay (power 0.9) to 0
# without warm-up. The learned void embedding decays like any other weight, as ZSSeg's non_object_embedding.
# Iterations are set per config.
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    clip_grad=dict(max_norm=0.01, norm_type=2),
    paramwise_cfg=dict(
        norm_decay_mult=0.0, custom_keys={"backbone": dict(lr_mult=0.1), "query_embed": dict(decay_mult=0.0)}
    ),
)
max_iters = 60000
param_scheduler = [dict(type="PolyLR", eta_min=0, power=0.9, begin=0, end=max_iters, by_epoch=False)]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=5000)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
