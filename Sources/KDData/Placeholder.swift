import KDCore
