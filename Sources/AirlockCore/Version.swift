/// The version printed as the driver version and in audit records (scripts/package reads it here).
public let airlockVersion = "0.1.0"
