"""The 0.1 call forms keep working for one release, each with a FutureWarning that says
what to write instead, and give the same results as the new forms."""

import pytest
import torch

import fusionkit as fk
from fusionkit.losses import masked_mse
from tests.helpers import lengths_mask

D = 8


def test_cross_modal_attention_is_multi_head_attention_with_context_mask_renamed():
    torch.manual_seed(0)
    with pytest.warns(FutureWarning, match="CrossModalAttention is now MultiHeadAttention"):
        old = fk.CrossModalAttention(D, heads=2).eval()
    new = fk.MultiHeadAttention(D, heads=2).eval()
    new.load_state_dict(old.state_dict())
    x, ctx, key_mask = torch.randn(2, 3, D), torch.randn(2, 5, D), lengths_mask([5, 2], 5)
    with pytest.warns(FutureWarning, match="context_mask= is now key_mask="):
        out = old(x, ctx, context_mask=key_mask)
    torch.testing.assert_close(out, new(x, ctx, key_mask=key_mask))


def test_positional_masks_warn_and_still_work():
    block = fk.DialogueContextEncoder(D, heads=2, num_speakers=2, max_len=8).eval()
    x, mask = torch.randn(2, 4, D), lengths_mask([4, 2], 4)
    speakers = torch.zeros(2, 4, dtype=torch.long)
    with pytest.warns(FutureWarning, match=r"pass mask, speakers by keyword \(mask=\.\.\.\)"):
        old = block(x, mask, speakers)
    torch.testing.assert_close(old, block(x, mask=mask, speakers=speakers))
    with pytest.warns(FutureWarning, match="pass mask by keyword"):
        assert masked_mse(x, x, mask).item() == 0.0
    with (
        pytest.warns(FutureWarning),
        pytest.raises(TypeError, match="given both by position and by keyword"),
    ):
        block(x, mask, mask=mask, speakers=speakers)


def test_transformer_layer_old_positional_order():
    layer = fk.TransformerLayer(D, heads=2, cross=True).eval()
    x, ctx, mask = torch.randn(1, 3, D), torch.randn(1, 3, D), lengths_mask([2], 3)
    with pytest.warns(FutureWarning, match="pass mask, context, key_mask by keyword"):
        old = layer(x, mask, ctx, mask)
    torch.testing.assert_close(old, layer(x, mask=mask, context=ctx, key_mask=mask))


def test_variational_fusion_old_constructor_and_sequence_input():
    torch.manual_seed(0)
    with pytest.warns(FutureWarning, match=r"VariationalFusion\(in_dims, dim\)"):
        old = fk.VariationalFusion(D, num_inputs=2, latent_dim=4).eval()
    assert old.in_dims == {"0": D, "1": D} and old.dim == 4
    xs, mask = [torch.randn(1, 3, D), torch.randn(1, 3, D)], lengths_mask([3], 3)
    with pytest.warns(FutureWarning, match="mapping of named inputs"):
        out = old(xs, mask=mask)
    torch.testing.assert_close(out.z, old({"0": xs[0], "1": xs[1]}, mask=mask).z)


def test_moved_data_internals_warn():
    import fusionkit.data
    from fusionkit.data import pickles

    with pytest.warns(FutureWarning, match="fusionkit.data.SafeUnpickler is internal"):
        assert fusionkit.data.SafeUnpickler is pickles.SafeUnpickler
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = fusionkit.data.nope
