"""Template ensembles in the core: the lists ZSSeg uses, and each class as the normalised mean of its templates."""

import open_clip
import pytest
import torch
import torch.nn.functional as F

from pomp_plugins.prompt import TEMPLATE_SETS, class_embeddings, get_templates, template_embeddings


def test_template_sets_are_zssegs():
    imagenet, vild = TEMPLATE_SETS["imagenet80"], TEMPLATE_SETS["vild"]
    assert TEMPLATE_SETS["openai"] is imagenet  # the classification tool's old name
    # ZSSeg's CLIP.IMAGENET_PROMPT: OpenAI's 80 ImageNet templates in OpenAI's order
    assert len(imagenet) == 80 and len(set(imagenet)) == 80
    assert imagenet[:3] == ("a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.")
    assert imagenet[-1] == "a tattoo of the {}." and imagenet[39] == "a photo of a {}."
    # ZSSeg's CLIP.VILD_PROMPT, two without a full stop
    assert len(vild) == 14 and vild[1] == "This is a photo of a {}" and vild[-1] == "There is a large {} in the scene."
    assert get_templates(["a {} here."]) == ("a {} here.",)
    with pytest.raises(ValueError, match="unknown template set"):
        get_templates("imagenet")
    with pytest.raises(ValueError, match="exactly one"):
        get_templates(["no slot"])


@pytest.mark.parametrize("templates", ["vild", ["a photo of a {}.", "a drawing of the {}."]])
def test_ensemble_is_the_normalised_mean_of_normalised_template_embeddings(tiny_clip, templates):
    names = ["cat", "traffic light"]
    ours = template_embeddings(tiny_clip, names, templates)
    with torch.no_grad():
        expected = torch.stack(
            [
                F.normalize(
                    tiny_clip.model.encode_text(
                        open_clip.tokenize([t.format(name) for t in get_templates(templates)]), normalize=True
                    ).mean(0),
                    dim=0,
                )
                for name in names
            ]
        )
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        class_embeddings(names, templates=templates, clip_model="pomp-tiny", clip_pretrained=None),
        expected,
        atol=1e-5,
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match="exactly one"):
        class_embeddings(
            names, templates="vild", hard_prompt="a photo of a", clip_model="pomp-tiny", clip_pretrained=None
        )
