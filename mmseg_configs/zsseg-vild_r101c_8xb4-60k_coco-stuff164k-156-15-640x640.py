# The ZSSeg baseline with ViLD's 14 templates (ZSSeg's zero_shot_maskformer_R101c_vild_prompt_bs32_60k) for the head
# and the CLIP stage, in place of a POMP prompt.
_base_ = "./zsseg_r101c_8xb4-60k_coco-stuff164k-156-15-640x640.py"
model = dict(decode_head=dict(text_classifier=dict(prompt=None, templates="vild")))
