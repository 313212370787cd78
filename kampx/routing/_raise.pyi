from typing import Callable, NoReturn

def raisers(
    exit_type: type[BaseException], drop_type: type[BaseException], module: str
) -> tuple[Callable[[], NoReturn], Callable[[], NoReturn]]: ...
