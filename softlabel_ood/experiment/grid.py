"""The experiment grid's old address: config files written before it moved to
`softlabel_ood.configs.grid` (a config file holds the grid as data) still import it here."""

from softlabel_ood.configs.grid import *  # noqa: F403
