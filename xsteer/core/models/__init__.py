from xsteer.core.models.load import *  # noqa: F403
