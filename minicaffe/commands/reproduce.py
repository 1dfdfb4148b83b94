"""``tools/reproduce``: train every method and write the paper's tables and figures.

    tools/reproduce [--toy | --root DATASET_ROOT] [--family toyhome | office_home | DIR]
                    [--pairs Ar:Cl,Pr:Rw | all] [--bits 64 | 16,64,128]
                    [--methods DAH,NoDA,SuH,DAN,DANN,ITQ,KMeans,BA,BDNN[,DAH_authors]]
                    [--seeds 1,2,3] [--set [METHOD:]LAYER.FIELD=VALUE ...]
                    [--trunk FILE | none | --weights FILE] [--pretrain N] [--jobs N | auto]
                    [--out results] [--iters N] [--no_figures] [--gpu N]

With no data option it uses the embedded ToyHome data (generated and cached on first use);
``--root`` takes any ``<root>/<Domain>/<Class>/<image>`` folder (Office-Home as distributed,
Office-31, a user's own): its folder names are the domains, named in ``--pairs`` with case,
spaces and underscores ignored, by Office-Home's (Ar, Cl, Pr, Rw) or Office-31's (A, D, W)
short names, or by an unambiguous prefix; ``all`` is every ordered pair of the domains found.
The nets are ``--family``'s; with ``--root`` alone office_home when the domains are
Office-Home's, else toyhome (the line saying which is logged).

Where trainings start is decided in ``start_protocol``. The paper's methods all start from
ImageNet VGG-F; the toyhome family's stand-in is the generic trunk
``prototxt/toyhome/things_trunk.caffemodel`` (``tools/make_trunk``: 64 other classes in every
domain style), and every method of every pair starts from its conv1–fc7 (the hash layer or
classifier starts afresh). ``--trunk FILE`` starts them from another file's conv1–fc7,
``--trunk none`` from fresh fillers (the other families' default), ``--weights FILE`` from the
conv1–fc7 of a whole pretrained model (``VGG_CNN_F.caffemodel`` on Office-Home). ``--pretrain N`` first trains the NoDA
net on each source domain alone for N iterations (from --trunk / --weights, else from fresh
fillers: ``--pretrain 300`` is the embedded protocol before the generic trunk) and starts
every method of that source from its conv1–fc7.

For every selected transfer pair, bit length and seed it trains the chosen methods, ``--jobs
N`` at a time in worker processes (one thread each; a model is the same bytes whatever N),
reusing a model already in --out when it was trained from the same start weights (so an
interrupted run resumes), extracts codes in the TEST phase and writes to --out:

- ``accuracy.md`` / ``.csv``: target recognition accuracy (supplement Table 1's shape: DAN,
  DANN, then NoDA-d beside DAH-d (and DAH_authors-d), per pair, and the average), mean ± std
  over the seeds;
- ``map_<d>bits.md`` / ``.csv``: mAP (Tables 2–3's shape: NoDA, ITQ, KMeans, BA, BDNN, DAH,
  (DAH_authors,) SuH), protocol A (target queries against the source database, the authors'
  code) and protocol B (within the target, leave-self-out);
- ``pr_<d>bits_<target>[_from_<source>].csv`` / ``.png``: precision–recall by Hamming radius,
  one curve per method, averaged over the seeds (Figures 1–2; ``_from_`` for rows other than
  the supplement's);
- ``comparison.md`` / ``.csv``: DAH (and DAH_authors) against NoDA, DAN and DANN over matched
  pairs × seeds × bit lengths: mean difference, wins, paired t and a sign-flip permutation p;
- ``figures/<S>-<T>_<d>bits/``: when DAH and NoDA ran, the first seed's ``pair_figures``
  (``minicaffe.dah.figures``): fc7 of the start trunk (before adaptation), of NoDA and of DAH
  embedded in 2-D, their codes, every loss term of their logs, and DAH's retrieval
  (``--no_figures`` to skip; they need matplotlib, ``pip install 'minicaffe[plot]'``);
- ``logs/<run>.log``: each training's solver log (``tools/parse_log``, ``tools/plot_log``);
- ``results.json``: every run of every seed with its command, seed, overrides, start weights
  (``start``: ``trunk:<sha1 of the file>``, ``scratch``, ``pretrain<N>``...) and numbers.

The mAP tables have a row for each target of the pairs: for Office-Home's (and ToyHome's)
domains the supplement's source (Art for Clipart, Product and Real World, Clipart for Art)
when that pair is chosen, otherwise one row per chosen pair, "Target (source)". SuH and the
unsupervised baselines (on the NoDA model's fc7 features) use the target domain alone.

``--set [METHOD:]LAYER.FIELD=VALUE`` changes the nets (or ``solver.FIELD``) before any
training, so a study is one command (``Override``); an unprefixed one applies to every method
whose net has the field, and the source-only pretraining takes only ``pretrain:`` ones.

Run names are ``<method>_<S>-<T>[_<d>bits]`` with Office-Home's short names (``DAH_Ar-Cl_64bits``)
or the folder names made file-safe; a seed other than 1 adds ``_s<seed>``, ``--set``
overrides that change a method's net or solver add ``_set<hash of them>``, and a start other
than the family's default (or --weights) adds it (``_trunk1a2b3c4d``, ``_scratch``,
``_pre300``), so no run reuses a model trained under other settings; a plain-named model
trained from other start weights (a new generic trunk) is trained again.
"""
import sys

from minicaffe.dah import pipeline

from ._cli import run, summary


def build_parser():
    return pipeline.build_parser(summary(__doc__))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    parser.set_defaults(argv=argv)   # recorded with every run
    return run(pipeline.reproduce, argv, parser=parser)
