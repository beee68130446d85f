import torch

from seqrev.data import Batches, SequenceData
from seqrev.tasks import make_pairs


def prepared(**kwargs) -> SequenceData:
    data = SequenceData(**kwargs)
    data.prepare()
    return data


def test_shapes_and_one_hot():
    data = prepared(timesteps=6, n_features=7, n_train=300, n_test=50)
    inputs, targets = data.train_full
    assert inputs.shape == (300, 6, 7) and inputs.dtype == torch.float32
    assert targets.shape == (300, 6) and targets.dtype == torch.int64
    assert set(inputs.unique().tolist()) == {0.0, 1.0}
    assert torch.all(inputs.sum(-1) == 1)  # exactly one hot per step
    assert data.test[0].shape == (50, 6, 7)
    assert targets.min() >= 0 and targets.max() < 7


def test_target_is_input_reversed():
    data = prepared(timesteps=5, n_train=100)
    inputs, targets = data.train_full
    symbols = inputs.argmax(-1)
    for row_in, row_out in zip(symbols.tolist(), targets.tolist()):
        assert row_out == row_in[::-1]


def test_same_seed_same_data_and_different_seed_different_data():
    a, b, c = prepared(seed=3), prepared(seed=3), prepared(seed=4)
    assert torch.equal(a.train_full[0], b.train_full[0]) and torch.equal(a.test[1], b.test[1])
    assert not torch.equal(a.train_full[0], c.train_full[0])


def test_data_does_not_depend_on_global_rng():
    torch.manual_seed(0)
    a = prepared(seed=1)
    torch.manual_seed(123)
    torch.rand(1000)
    b = prepared(seed=1)
    assert torch.equal(a.train_full[1], b.train_full[1])


def test_validation_split_is_the_tail_of_train():
    data = prepared(n_train=2000, val_fraction=0.1)
    assert len(data.train[0]) == 1800 and len(data.val[0]) == 200
    assert torch.equal(data.val[0], data.train_full[0][1800:])
    assert torch.equal(data.train[1], data.train_full[1][:1800])


def test_batches_cover_every_row_once_per_epoch_and_reshuffle():
    inputs, targets = make_pairs("reverse", 100, 4, 10, torch.Generator().manual_seed(0))
    rows = torch.arange(100)
    batches = Batches(rows, targets, batch_size=32, group_size=3, shuffle=True,
                      generator=torch.Generator().manual_seed(1))
    assert len(batches) == 2 and batches.n_batches() == 4
    epochs = []
    for _ in range(2):
        groups = list(batches)
        assert [len(g) for g in groups] == [3, 1]
        sizes = [len(x) for g in groups for x, _ in g]
        assert sizes == [32, 32, 32, 4]  # the last partial batch is kept, as Keras does
        seen = torch.cat([x for g in groups for x, _ in g])
        assert sorted(seen.tolist()) == list(range(100))
        epochs.append(seen)
    assert not torch.equal(epochs[0], epochs[1])


def test_without_a_group_size_each_batch_is_itself():
    rows = torch.arange(100)
    batches = Batches(rows, rows, batch_size=32)
    assert len(batches) == 4
    assert [len(x) for x, _ in batches] == [32, 32, 32, 4]
    assert torch.equal(torch.cat([x for x, _ in batches]), rows)  # in order without shuffle


def test_batches_keep_pairs_together():
    data = prepared(n_train=200)
    for inputs, targets in data.train_dataloader():
        assert torch.equal(inputs.argmax(-1).flip(1), targets)


def test_shuffle_state_round_trips():
    data = prepared(n_train=200)
    state = data.state_dict()
    first = [x for x, _ in data.train_dataloader()]
    data.load_state_dict(state)
    again = [x for x, _ in data.train_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
